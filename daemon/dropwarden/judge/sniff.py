"""File type from magic bytes (never the extension): what views a snapshot can yield."""

from __future__ import annotations

from dataclasses import dataclass

# (offset, magic, type, kind). kind: "image" (Pillow may open it), "binary" (known non-text container).
_MAGIC: tuple[tuple[int, bytes, str, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "png", "image"),
    (0, b"\xff\xd8\xff", "jpeg", "image"),
    (0, b"GIF87a", "gif", "image"),
    (0, b"GIF89a", "gif", "image"),
    (0, b"BM", "bmp", "image"),
    (0, b"II*\x00", "tiff", "image"),
    (0, b"MM\x00*", "tiff", "image"),
    (8, b"WEBP", "webp", "image"),
    (0, b"%PDF-", "pdf", "binary"),
    (0, b"PK\x03\x04", "zip", "binary"),
    (0, b"\x1f\x8b\x08", "gzip", "binary"),
    (0, b"BZh", "bzip2", "binary"),
    (0, b"\xfd7zXZ\x00", "xz", "binary"),
    (257, b"ustar", "tar", "binary"),
    (0, b"7z\xbc\xaf\x27\x1c", "7z", "binary"),
    (0, b"Rar!\x1a\x07", "rar", "binary"),
    (0, b"\x7fELF", "elf", "binary"),
    (0, b"MZ", "pe", "binary"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole", "binary"),
    (0, b"SQLite format 3\x00", "sqlite", "binary"),
    (4, b"ftypavif", "avif", "binary"),
    (4, b"ftypheic", "heic", "binary"),
    (4, b"ftyp", "mp4", "binary"),
)

_MAGIC_OFFSETS = tuple(sorted({offset for offset, *_ in _MAGIC}))
_MAGIC_BY_LEAD: dict[tuple[int, int], list[tuple[int, tuple[int, bytes, str, str]]]] = {}
for _index, _entry in enumerate(_MAGIC):
    _MAGIC_BY_LEAD.setdefault((_entry[0], _entry[1][0]), []).append((_index, _entry))

_SAMPLE = 8192
_CONTROL_BYTES = bytes(b for b in range(0x20) if b not in b"\t\n\r\f\v\x1b")


@dataclass(frozen=True)
class FileType:
    name: str  # "png", "pdf", "text", "binary", "empty", ...
    kind: str  # "image", "text", "binary", "empty"


def sniff(data: bytes) -> FileType:
    """Classify by magic bytes; otherwise text vs binary by looking at the first 8 KiB."""
    if not data:
        return FileType("empty", "empty")
    # Only the magics whose first byte is there are compared (for text: none), in table order.
    candidates = [
        entry
        for offset in _MAGIC_OFFSETS
        if len(data) > offset
        for entry in _MAGIC_BY_LEAD.get((offset, data[offset]), ())
    ]
    if len(candidates) > 1:
        candidates.sort()
    for _, (offset, magic, name, kind) in candidates:
        if data.startswith(magic, offset):
            if name == "webp" and not data.startswith(b"RIFF"):
                continue
            check = _CONSISTENT.get(name)
            if check is not None and not check(data):
                continue
            return FileType(name, kind)
    return FileType("text", "text") if looks_like_text(data[:_SAMPLE]) else FileType("binary", "binary")


BMP_INFO_HEADERS = frozenset({12, 40, 52, 56, 64, 108, 124})


def _u32(data: bytes, offset: int, order: str = "little") -> int:
    return int.from_bytes(data[offset : offset + 4], order)  # type: ignore[arg-type]


def _bmp(data: bytes) -> bool:
    """File size, reserved fields, pixel offset and info-header size agree with each other and the file
    (trailing bytes after the declared size are allowed: they are judged as `trailing`)."""
    if len(data) < 26:
        return False
    size, reserved, offset, header = _u32(data, 2), _u32(data, 6), _u32(data, 10), _u32(data, 14)
    return reserved == 0 and header in BMP_INFO_HEADERS and 14 + header <= offset <= size <= len(data)


def _pe(data: bytes) -> bool:
    """An MZ stub whose e_lfanew points at the `PE\\0\\0` signature inside the file."""
    if len(data) < 64:
        return False
    lfanew = _u32(data, 0x3C)
    return 64 <= lfanew <= len(data) - 4 and data[lfanew : lfanew + 4] == b"PE\x00\x00"


def _jpeg(data: bytes) -> bool:
    return len(data) > 3 and 0xC0 <= data[3] <= 0xFE  # a marker follows SOI


def _tiff(data: bytes) -> bool:
    order = "little" if data.startswith(b"II") else "big"
    return len(data) >= 8 and 8 <= _u32(data, 4, order) < len(data)  # first IFD inside the file


def _gzip(data: bytes) -> bool:
    return len(data) >= 18 and data[3] & 0xE0 == 0  # reserved flag bits clear


def _bzip2(data: bytes) -> bool:
    return len(data) >= 14 and data[3:4] in b"123456789" and data[4:10] in (b"1AY&SY", b"\x17rE8P\x90")


def _elf(data: bytes) -> bool:
    return len(data) >= 20 and data[4] in (1, 2) and data[5] in (1, 2) and data[6] == 1


def _ftyp(data: bytes) -> bool:
    box = int.from_bytes(data[0:4], "big")
    return 16 <= box <= min(len(data), 4096) and box % 4 == 0


def _tar(data: bytes) -> bool:
    """A ustar header whose checksum adds up."""
    if len(data) < 512:
        return False
    try:
        stored = int(data[148:156].strip(b" \x00") or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(data[:148]) + 8 * 32 + sum(data[156:512])


# Magics shorter than 6 bytes never decide alone: the header behind them must hold together.
_CONSISTENT = {
    "bmp": _bmp,
    "pe": _pe,
    "jpeg": _jpeg,
    "tiff": _tiff,
    "gzip": _gzip,
    "bzip2": _bzip2,
    "elf": _elf,
    "avif": _ftyp,
    "heic": _ftyp,
    "mp4": _ftyp,
    "tar": _tar,
}


def looks_like_text(sample: bytes) -> bool:
    """True for text in any common encoding, UTF-16/32 included; False for binary data."""
    if sample.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return True
    if utf16_without_bom(sample) is not None:
        return True
    if b"\x00" in sample:
        return False
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    return controls <= len(sample) // 100


def utf16_without_bom(sample: bytes) -> str | None:
    """Detect BOM-less UTF-16 of mostly-ASCII text by its regular NUL bytes: 'utf-16-le' / 'utf-16-be'."""
    if len(sample) < 16 or b"\x00" not in sample:  # no NUL byte: no UTF-16 of ASCII text
        return None
    even, odd = sample[0::2], sample[1::2]
    nul_even, nul_odd = even.count(0) / len(even), odd.count(0) / len(odd)
    if nul_odd > 0.4 and nul_even < 0.05:
        return "utf-16-le"
    if nul_even > 0.4 and nul_odd < 0.05:
        return "utf-16-be"
    return None
