"""A small OLE2 compound file writer for tests (olefile only reads): version 3, 512-byte sectors, mini stream."""

from __future__ import annotations

import itertools
import struct

SECTOR = 512
MINI = 64
CUTOFF = 4096
FREE, END, FATSECT, NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


class _Entry:
    def __init__(self, name: str, kind: int, data: bytes = b"") -> None:
        self.name, self.kind, self.data = name, kind, data
        self.children: dict[str, _Entry] = {}
        self.start, self.size = END, 0
        self.index = 0


def _tree(streams: dict[str, bytes]) -> _Entry:
    root = _Entry("Root Entry", 5)
    for path, data in streams.items():
        node = root
        *storages, leaf = path.split("/")
        for name in storages:
            node = node.children.setdefault(name, _Entry(name, 1))
        node.children[leaf] = _Entry(leaf, 2, data)
    return root


def _flatten(root: _Entry) -> list[_Entry]:
    entries, pending = [], [root]
    while pending:
        node = pending.pop(0)
        node.index = len(entries)
        entries.append(node)
        pending.extend(_ordered(node))
    return entries


def _ordered(node: _Entry) -> list[_Entry]:
    """Siblings in the order a compound file's red-black tree keeps them: length, then upper case."""
    return sorted(node.children.values(), key=lambda e: (len(e.name), e.name.upper()))


def _chain(fat: list[int], first: int, count: int) -> int:
    for index in range(count):
        fat.append(first + index + 1 if index < count - 1 else END)
    return first if count else END


def _pad(data: bytes, size: int) -> bytes:
    return data + b"\0" * (-len(data) % size)


def compound_file(streams: dict[str, bytes]) -> bytes:
    """A compound file holding `streams` ("Storage/Stream" paths; storages made as needed): streams
    under 4096 bytes in the mini stream, others in regular sectors."""
    root = _tree(streams)
    entries = _flatten(root)
    mini_stream, minifat = b"", []
    for entry in entries:
        if entry.kind == 2 and 0 < len(entry.data) < CUTOFF:
            entry.size = len(entry.data)
            entry.start = _chain(minifat, len(mini_stream) // MINI, -(-len(entry.data) // MINI))
            mini_stream += _pad(entry.data, MINI)
    sectors: list[bytes] = []
    fat: list[int] = []

    def place(data: bytes) -> int:
        count = -(-len(data) // SECTOR)
        start = _chain(fat, len(sectors), count)
        padded = _pad(data, SECTOR)
        sectors.extend(padded[i : i + SECTOR] for i in range(0, len(padded), SECTOR))
        return start

    for entry in entries:
        if entry.kind == 2 and len(entry.data) >= CUTOFF:
            entry.size = len(entry.data)
            entry.start = place(entry.data)
    root.start, root.size = (place(mini_stream), len(mini_stream)) if mini_stream else (END, 0)
    minifat_bytes = b"".join(struct.pack("<I", v) for v in minifat)
    minifat_start = place(_pad(minifat_bytes, SECTOR)) if minifat else END
    right: dict[int, int] = {}
    for entry in entries:  # siblings as a right-leaning chain: a valid search tree in the file's order
        children = _ordered(entry)
        for left_one, right_one in itertools.pairwise(children):
            right[left_one.index] = right_one.index
    directory = b"".join(_directory_entry(entry, right.get(entry.index, NOSTREAM)) for entry in entries)
    directory_start = place(_pad(directory, SECTOR))
    fat_count = 1
    while (len(sectors) + fat_count) > fat_count * (SECTOR // 4):
        fat_count += 1
    assert fat_count <= 109, "a test file this large needs a DIFAT"
    fat_start = len(sectors)
    fat.extend([FATSECT] * fat_count)
    fat.extend([FREE] * (fat_count * (SECTOR // 4) - len(fat)))
    fat_bytes = b"".join(struct.pack("<I", v) for v in fat)
    sectors.extend(fat_bytes[i : i + SECTOR] for i in range(0, len(fat_bytes), SECTOR))
    difat = [fat_start + i for i in range(fat_count)] + [FREE] * (109 - fat_count)
    header = (
        MAGIC
        + b"\0" * 16
        + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
        + b"\0" * 6
        + struct.pack(
            "<IIIIIIIII",
            0,
            fat_count,
            directory_start,
            0,
            CUTOFF,
            minifat_start,
            -(-len(minifat_bytes) // SECTOR),
            END,
            0,
        )
        + b"".join(struct.pack("<I", v) for v in difat)
    )
    assert len(header) == SECTOR
    return header + b"".join(sectors)


def _directory_entry(entry: _Entry, right: int) -> bytes:
    name = entry.name.encode("utf-16-le")[:62] + b"\0\0"
    children = _ordered(entry)
    child = children[0].index if children else NOSTREAM
    return (
        name.ljust(64, b"\0")
        + struct.pack("<HBB", len(name), entry.kind, 1)
        + struct.pack("<III", NOSTREAM, right, child)
        + b"\0" * 16
        + struct.pack("<I", 0)
        + b"\0" * 16
        + struct.pack("<IQ", entry.start, entry.size)
    )


def compressed_rtf(rtf: bytes) -> bytes:
    """PR_RTF_COMPRESSED as MS-OXRTFCP writes it, with literals only (the reader's references are
    checked against the specification's own example): header, CRC, groups of 8, the end marker."""
    import zlib

    body = bytearray()
    write = 207  # after the dictionary's initial contents
    whole = len(rtf) - len(rtf) % 8
    for start in range(0, whole, 8):
        body += b"\0" + rtf[start : start + 8]
    rest = rtf[whole:]
    write = (write + len(rtf)) % 4096
    body += bytes([1 << len(rest)]) + rest + (write << 4).to_bytes(2, "big")
    crc = zlib.crc32(bytes(body), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return struct.pack("<IIII", len(body) + 12, len(rtf), 0x75465A4C, crc) + bytes(body)
