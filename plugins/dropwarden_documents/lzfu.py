"""Compressed RTF (MS-OXRTFCP, "LZFu"): an Outlook message's PR_RTF_COMPRESSED back to RTF, bounded."""

from __future__ import annotations

import struct
import zlib

from dropwarden_documents.walk import LimitReached

# The dictionary's initial contents (MS-OXRTFCP 2.1.3.1.1); writing continues right after them.
PREBUFFER = (
    b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss \\fmodern \\fscript "
    b"\\fdecor MS Sans SerifSymbolArialTimes New RomanCourier{\\colortbl\\red0\\green0\\blue0\r\n\\par "
    b"\\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx"
)
COMPRESSED = 0x75465A4C  # "LZFu"
UNCOMPRESSED = 0x414C454D  # "MELA"
_WINDOW = 4096


class BadCompressedRtf(ValueError):
    """Not compressed RTF, or damaged (a wrong CRC, a size that does not fit, an unknown type)."""


def crc(data: bytes) -> int:
    """The format's CRC-32: the usual table, started at 0 and never inverted (zlib's, un-inverted)."""
    return zlib.crc32(data, 0xFFFFFFFF) ^ 0xFFFFFFFF


def decompress(data: bytes, limit: int) -> bytes:
    """The RTF inside `data`; at most `limit` bytes come out (a larger declared size: LimitReached,
    never a larger buffer); the declared size is trusted only as an upper bound."""
    if len(data) < 16:
        raise BadCompressedRtf("shorter than its header")
    size, raw_size, kind, checksum = struct.unpack_from("<IIII", data)
    body = data[16 : 4 + size]
    if size < 12 or len(body) != size - 12:
        raise BadCompressedRtf("declared size does not match the stream")
    if kind == UNCOMPRESSED:
        return body[: min(raw_size, limit)]
    if kind != COMPRESSED:
        raise BadCompressedRtf("unknown compression type")
    if crc(body) != checksum:
        raise BadCompressedRtf("CRC mismatch")
    if raw_size > limit:
        raise LimitReached(f"compressed RTF declares more than {limit} bytes (documents.max_member_bytes)")
    return _lzfu(body, raw_size)


def _lzfu(body: bytes, raw_size: int) -> bytes:
    window = bytearray(_WINDOW)
    window[: len(PREBUFFER)] = PREBUFFER
    write = len(PREBUFFER)
    out = bytearray()
    position, end = 0, len(body)
    while position < end:
        control = body[position]
        position += 1
        for bit in range(8):
            if position >= end:
                break
            if not control & (1 << bit):  # a literal byte
                value = body[position]
                position += 1
                out.append(value)
                window[write] = value
                write = (write + 1) % _WINDOW
            else:  # a reference: 12 bits of offset into the window, 4 bits of length - 2
                if position + 2 > end:
                    raise BadCompressedRtf("a reference cut short")
                token = (body[position] << 8) | body[position + 1]
                position += 2
                offset, length = token >> 4, (token & 0xF) + 2
                if offset == write:  # the end marker
                    return bytes(out[:raw_size])
                for step in range(length):
                    value = window[(offset + step) % _WINDOW]
                    out.append(value)
                    window[write] = value
                    write = (write + 1) % _WINDOW
            if len(out) > raw_size + 17:  # never past what it declared (its CRC held: just damage)
                raise BadCompressedRtf("more output than the declared size")
    return bytes(out[:raw_size])
