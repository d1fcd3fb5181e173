"""Archives: zip (zip64 too), tar, and gzip / bzip2 / xz streams, members recursed within the limits."""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import zipfile
from collections.abc import Callable
from io import BytesIO
from typing import IO

from dropwarden.content import sniff
from dropwarden_documents.walk import Walker, Within

_OPENERS: dict[str, Callable[[BytesIO], IO[bytes]]] = {
    "gzip": lambda raw: gzip.GzipFile(fileobj=raw),
    "bzip2": bz2.BZ2File,
    "xz": lzma.LZMAFile,
}


def walk_zip(walker: Walker, data: bytes, within: Within, depth: int) -> None:
    """Every member of a zip: encrypted ones are problems (`encrypted`), the others recursed."""
    with zipfile.ZipFile(BytesIO(data)) as archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        walker.text("\n".join(info.filename for info in infos), (*within, "member names"))
        for info in walker.members(infos, within):
            inner = (*within, info.filename)
            if info.flag_bits & 0x1:
                walker.problem("encrypted", "a member encrypted without a password", inner)
                continue
            try:
                with archive.open(info) as stream:
                    child = walker.read_member(stream, min(info.compress_size, len(data)), info.filename)
            except zipfile.BadZipFile:
                walker.problem("decode_error", "damaged member", inner)
                continue
            walker.visit(child, inner, depth + 1, info.filename)


def walk_tar(walker: Walker, data: bytes, within: Within, depth: int) -> None:
    """Every regular file of a tar (links, devices and directories are names only)."""
    with tarfile.open(fileobj=BytesIO(data), mode="r:") as archive:
        names: list[str] = []
        for member in walker.members(iter(archive), within):
            names.append(member.name)
            if not member.isfile():
                continue
            stream = archive.extractfile(member)
            if stream is None:
                continue
            child = walker.read_member(stream, None, member.name)
            walker.visit(child, (*within, member.name), depth + 1, member.name)
        walker.text("\n".join(names), (*within, "member names"))


def walk_compressed(walker: Walker, data: bytes, within: Within, depth: int) -> None:
    """The one stream of a gzip, bzip2 or xz file, decompressed as it is read."""
    kind = sniff(data).name
    with _OPENERS[kind](BytesIO(data)) as stream:
        child = walker.read_member(stream, len(data), kind)
    walker.visit(child, (*within, f"({kind} content)"), depth + 1)
