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
    (0, b"\x1f\x8b", "gzip", "binary"),
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
    for offset, magic, name, kind in _MAGIC:
        if data.startswith(magic, offset):
            if name == "webp" and not data.startswith(b"RIFF"):
                continue
            if name == "bmp" and len(data) < 26:
                continue
            return FileType(name, kind)
    return FileType("text", "text") if looks_like_text(data[:_SAMPLE]) else FileType("binary", "binary")


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
    if len(sample) < 16:
        return None
    even, odd = sample[0::2], sample[1::2]
    nul_even, nul_odd = even.count(0) / len(even), odd.count(0) / len(odd)
    if nul_odd > 0.4 and nul_even < 0.05:
        return "utf-16-le"
    if nul_even > 0.4 and nul_odd < 0.05:
        return "utf-16-be"
    return None
