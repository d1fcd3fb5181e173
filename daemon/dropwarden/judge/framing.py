"""Walk image containers' framing without decoding a pixel: where the image ends, how many frames it has.

Image decoders stop at the image's end marker (PNG `IEND`, JPEG `EOI`, the GIF trailer) or at the size
the container states (WebP's RIFF size, BMP's pixel array): whatever follows is never decoded. These
walkers only follow chunk lengths, marker segments, sub-blocks and IFD offsets, and give up after
`MAX_STEPS` blocks. TIFF has no end (its pages are found through offsets), so it is not cut. The
same walks list the blocks that hold metadata (`dropwarden.judge.metadata`).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

# Blocks walked before giving up: a real 64 MiB GIF has ~260,000 sub-blocks; one made of 1-byte
# sub-blocks to make the walk slow is refused instead (unscanned, too_large).
MAX_STEPS = 2_000_000
# In JPEG entropy-coded data a 0xFF byte is followed by 0x00 (stuffing) or a restart marker (0xD0-0xD7);
# anything else (after any 0xFF fill bytes) is the next marker.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class EndNotFound(Exception):
    """The image's framing is broken or too fragmented to tell where it ends. `too_large` is true when
    the walk gave up after MAX_STEPS blocks (a limit, not a defect)."""

    def __init__(self, detail: str, *, too_large: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.too_large = too_large


def image_end(data: bytes, file_type: str) -> int | None:
    """The offset just past the image in `data` (sniffed as `file_type`), or None where the format has
    no end to tell (TIFF). A container that runs past the end of the data (truncated) ends there:
    nothing follows it. Raises EndNotFound for framing that cannot be walked."""
    finder = _FINDERS.get(file_type)
    if finder is None:
        return None
    try:
        end = finder(data)
    except (IndexError, struct.error):
        return len(data)  # the framing runs past the data: truncated, nothing after it
    return min(end, len(data))


def frame_count(data: bytes, file_type: str) -> int | None:
    """How many frames a GIF or pages a TIFF holds, by walking its blocks or IFD chain; None for other
    formats, or framing that cannot be walked (Pillow's header count serves for APNG and WebP)."""
    try:
        if file_type == "gif":
            return _gif_walk(data)[1]
        if file_type == "tiff":
            return _tiff_pages(data)
    except (IndexError, struct.error, EndNotFound):
        return None
    return None


def _png_end(data: bytes) -> int:
    """After the IEND chunk: 8-byte signature, then chunks of (length, type, data, CRC)."""
    pos, size = 8, len(data)
    for _ in range(MAX_STEPS):
        if pos + 8 > size:
            return size
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        pos += 12 + length
        if kind == b"IEND":
            return pos
    raise _too_many("PNG chunks")


def _jpeg_end(data: bytes) -> int:
    """After the EOI marker: marker segments with lengths, and after each SOS the entropy-coded data
    up to the next marker (progressive files have several scans)."""
    pos, size = 2, len(data)
    for _ in range(MAX_STEPS):
        while pos < size and data[pos] == 0xFF and pos + 1 < size and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos + 1 >= size:
            return size
        if data[pos] != 0xFF:
            raise EndNotFound(f"JPEG: no marker at byte {pos} (bytes between segments)")
        marker = data[pos + 1]
        if marker == 0xD9:
            return pos + 2
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise EndNotFound(f"JPEG: segment length {length} at byte {pos}")
        pos += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next real marker
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                return size
            pos = found.start()
    raise _too_many("JPEG segments")


def _gif_end(data: bytes) -> int:
    return _gif_walk(data)[0]


def _gif_walk(data: bytes) -> tuple[int, int]:
    """(offset after the trailer 0x3B, frames): header, logical screen, colour table, then extension and
    image blocks made of length-prefixed sub-blocks. Data ending at a block boundary ends the walk."""
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    steps = frames = 0
    size = len(data)
    while steps < MAX_STEPS:
        if pos == size:
            return pos, frames
        introducer = data[pos]
        if introducer == 0x3B:
            return pos + 1, frames
        if introducer == 0x21:  # extension: label, sub-blocks
            pos += 2
        elif introducer == 0x2C:  # image: descriptor, local colour table, LZW code size, sub-blocks
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
            frames += 1
        else:
            raise EndNotFound(f"GIF: unknown block 0x{introducer:02x} at byte {pos}")
        while (length := data[pos]) != 0 and steps < MAX_STEPS:
            pos += 1 + length
            steps += 1
        pos += 1
        steps += 1
    raise _too_many("GIF blocks")


def _tiff_pages(data: bytes) -> int:
    """How many IFDs the chain from the header links (classic and BigTIFF); a loop ends the count."""
    order = "<" if data[:2] == b"II" else ">"
    (magic,) = struct.unpack_from(order + "H", data, 2)
    big = magic == 43
    offset = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]
    seen: set[int] = set()
    while offset and offset not in seen and len(seen) < MAX_STEPS:
        seen.add(offset)
        if big:
            (entries,) = struct.unpack_from(order + "Q", data, offset)
            (offset,) = struct.unpack_from(order + "Q", data, offset + 8 + 20 * entries)
        else:
            (entries,) = struct.unpack_from(order + "H", data, offset)
            (offset,) = struct.unpack_from(order + "I", data, offset + 2 + 12 * entries)
    return len(seen)


def _webp_end(data: bytes) -> int:
    """After the RIFF chunk, whose size the header states (padded to even)."""
    (length,) = struct.unpack_from("<I", data, 4)
    return 8 + length + (length & 1)


def _bmp_end(data: bytes) -> int:
    """After the pixel array: its offset from the file header, its size from the info header (rows
    padded to 4 bytes for uncompressed data; the stated image size for compressed data)."""
    (offset,) = struct.unpack_from("<I", data, 10)
    (header,) = struct.unpack_from("<I", data, 14)
    if header == 12:  # OS/2 BITMAPCOREHEADER
        width, height, _planes, bits = struct.unpack_from("<HHHH", data, 18)
        compression, stated = 0, 0
    elif header >= 40:
        width, height, _planes, bits, compression, stated = struct.unpack_from("<iiHHII", data, 18)
    else:
        raise EndNotFound(f"BMP: unknown header size {header}")
    if compression in (0, 3, 6):  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS: rows of whole pixels
        pixels = (abs(width) * bits + 31) // 32 * 4 * abs(height)
    elif stated:
        pixels = stated
    else:
        raise EndNotFound(f"BMP: compression {compression} without an image size")
    return offset + pixels


def _too_many(what: str) -> EndNotFound:
    detail = f"more than {MAX_STEPS} {what}: too fragmented to find the image's end"
    return EndNotFound(detail, too_large=True)


_FINDERS = {"png": _png_end, "jpeg": _jpeg_end, "gif": _gif_end, "webp": _webp_end, "bmp": _bmp_end}


def png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk's data up to IEND; a chunk running past the data is cut there."""
    pos, size = 8, len(data)
    for _ in range(MAX_STEPS):
        if pos + 8 > size:
            return
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        yield kind, pos + 8, min(pos + 8 + length, size)
        pos += 12 + length
        if kind == b"IEND":
            return
    raise _too_many("PNG chunks")


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment's payload up to EOI, skipping entropy-coded data
    (as `image_end` walks it). Raises EndNotFound where the framing breaks."""
    pos, size = 2, len(data)
    for _ in range(MAX_STEPS):
        while pos < size and data[pos] == 0xFF and pos + 1 < size and data[pos + 1] == 0xFF:
            pos += 1
        if pos + 3 >= size:
            return
        if data[pos] != 0xFF:
            raise EndNotFound(f"JPEG: no marker at byte {pos} (bytes between segments)")
        marker = data[pos + 1]
        if marker == 0xD9:
            return
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise EndNotFound(f"JPEG: segment length {length} at byte {pos}")
        yield marker, pos + 4, min(pos + 2 + length, size)
        pos += 2 + length
        if marker == 0xDA:
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                return
            pos = found.start()
    raise _too_many("JPEG segments")


def gif_extensions(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(label, start, end, joined sub-blocks) of each extension block up to the trailer: `data[start:end]`
    is the block's raw bytes after its label, length bytes included. Raises EndNotFound."""
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    steps, size = 0, len(data)
    while steps < MAX_STEPS:
        if pos >= size or data[pos] == 0x3B:
            return
        introducer = data[pos]
        if introducer == 0x21:
            label, pos = data[pos + 1], pos + 2
        elif introducer == 0x2C:
            local = data[pos + 9]
            label, pos = -1, pos + 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        else:
            raise EndNotFound(f"GIF: unknown block 0x{introducer:02x} at byte {pos}")
        start, parts = pos, []
        while pos < size and (length := data[pos]) != 0 and steps < MAX_STEPS:
            if label >= 0:
                parts.append(data[pos + 1 : pos + 1 + length])
            pos += 1 + length
            steps += 1
        pos += 1
        steps += 1
        if label >= 0:
            yield label, start, min(pos, size), b"".join(parts)
    raise _too_many("GIF blocks")


def riff_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(fourcc, start, end) of each top-level chunk of a RIFF (WebP) container, within its stated size."""
    (length,) = struct.unpack_from("<I", data, 4)
    pos, size = 12, min(len(data), 8 + length)
    for _ in range(MAX_STEPS):
        if pos + 8 > size:
            return
        kind = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        yield kind, pos + 8, min(pos + 8 + length, size)
        pos += 8 + length + (length & 1)
    raise _too_many("RIFF chunks")
