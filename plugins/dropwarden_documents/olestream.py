"""Opening an OLE2 compound file and reading its streams within the documents limits."""

from __future__ import annotations

import struct

import olefile

from dropwarden_documents.walk import LimitReached, Walker

_DAMAGE = (OSError, ValueError, TypeError, OverflowError, struct.error, IndexError, KeyError)


class Damaged(Exception):
    """A part of an OLE file that does not hold together; its message names the part (never content)."""


def open_ole(data: bytes) -> olefile.OleFileIO:
    try:
        return olefile.OleFileIO(data)
    except _DAMAGE as exc:
        raise Damaged(f"compound file structure ({type(exc).__name__})") from None


def read_stream(walker: Walker, ole: olefile.OleFileIO, path: str | list[str]) -> bytes:
    """One stream's bytes within documents.max_member_bytes and the file's total, counted as read."""
    name = path if isinstance(path, str) else "/".join(path)
    try:
        if ole.get_size(path) > walker.limits.max_member_bytes:
            raise LimitReached(f"stream {name[-60:]}: more than documents.max_member_bytes")
        with ole.openstream(path) as stream:
            data = stream.read(int(walker.limits.max_member_bytes) + 1)
    except _DAMAGE as exc:
        raise Damaged(f"stream {name[-60:]} ({type(exc).__name__})") from None
    walker.charge(len(data))
    return data
