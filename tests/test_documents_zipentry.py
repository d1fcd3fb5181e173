"""A zip member read straight from the archive's bytes: the same bytes as `zipfile`, or None (then
`zipfile` reads or refuses it as before) for anything not plainly consistent."""

from __future__ import annotations

import io
import zipfile
import zlib

import pptx
import pytest

from dropwarden_documents.formats import walk
from dropwarden_documents.settings import DocumentsSettings
from dropwarden_documents.zipentry import plain_entry

CONTENT = ("<a:t>カード 4111 1111 1111 1111</a:t>\n" * 200).encode()


def archive(method: int = zipfile.ZIP_DEFLATED, name: str = "ppt/slides/slide1.xml") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zipped:
        zipped.writestr("first.txt", b"before")
        zipped.writestr(name, CONTENT)
    return out.getvalue()


def entry(data: bytes, name: str = "ppt/slides/slide1.xml") -> zipfile.ZipInfo:
    return zipfile.ZipFile(io.BytesIO(data)).getinfo(name)


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_an_ordinary_entry_reads_as_zipfile_reads_it(method):
    data = archive(method, "名前/slide1.xml")
    info = entry(data, "名前/slide1.xml")
    assert plain_entry(data, info, 1 << 20) == zipfile.ZipFile(io.BytesIO(data)).read(info) == CONTENT


def test_anything_not_plainly_consistent_is_left_to_zipfile():
    data = archive()
    info = entry(data)
    start = data.index(b"ppt/slides/slide1.xml") + len("ppt/slides/slide1.xml")  # its local header's name
    assert plain_entry(data, info, len(CONTENT) - 1) is None  # larger than asked for
    flipped = bytearray(data)
    flipped[start + 40] ^= 0xFF  # its compressed stream damaged
    assert plain_entry(bytes(flipped), info, 1 << 20) is None
    with pytest.raises((zipfile.BadZipFile, zlib.error)):  # zipfile refuses it
        zipfile.ZipFile(io.BytesIO(bytes(flipped))).read(info)
    renamed = data.replace(b"ppt/slides/slide1.xml", b"ppt/slides/slideX.xml", 1)
    assert plain_entry(renamed, info, 1 << 20) is None
    truncated = data[: start + 20]
    assert plain_entry(truncated, info, 1 << 20) is None
    for field, value in (("file_size", info.file_size + 1), ("CRC", info.CRC ^ 1), ("flag_bits", 0x1)):
        odd = entry(data)
        setattr(odd, field, value)
        assert plain_entry(data, odd, 1 << 20) is None
    bzipped = archive(zipfile.ZIP_BZIP2)
    assert plain_entry(bzipped, entry(bzipped), 1 << 20) is None


def test_a_deck_whose_slide_stream_is_damaged_is_still_refused_as_before():
    deck = pptx.Presentation()
    deck.slides.add_slide(deck.slide_layouts[1]).shapes.title.text = "clean title " * 50
    out = io.BytesIO()
    deck.save(out)
    data = bytearray(out.getvalue())
    info = entry(bytes(data), "ppt/slides/slide1.xml")
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + 10] ^= 0x55
    outcome = walk(bytes(data), DocumentsSettings())
    assert outcome.problems and outcome.problems[0][0] == "decode_error", outcome.problems
