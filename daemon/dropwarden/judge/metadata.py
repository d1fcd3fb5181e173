"""An image's metadata as a text view: text chunks, comments, EXIF, XMP, ICC names; no pixel decoded.

A card number in a PNG `tEXt` chunk, a JPEG comment or an EXIF UserComment is never seen by OCR; the
core walks the container's blocks (`dropwarden.judge.framing`) and gives every block that is not pixel data
to the text rules, as view `metadata`: text fields decoded, EXIF parsed (Pillow) into its string tags,
any other block as its printable strings. At most `limit` bytes of text (more: too_large, what was read
still judged); a block that cannot be decoded is a decode_error, never silently skipped.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from PIL import ExifTags, Image, TiffTags

from dropwarden.judge.framing import EndNotFound, gif_extensions, jpeg_segments, png_chunks, riff_chunks
from dropwarden.judge.trailing import as_text, printable_strings
from dropwarden.verdict import Problem, Reason
from dropwarden.views import TextView

VIEW_NAME = "metadata"
SOURCE = "metadata"
# Text read from one image's metadata before it is too_large (XMP and ICC profiles run to megabytes).
MAX_METADATA_BYTES = 8 * 1024 * 1024
MAX_TIFF_PAGES = 64
# Blocks that hold pixels or numbers only (never text): not read.
_PNG_BINARY = frozenset(
    b"IHDR PLTE IDAT IEND tRNS gAMA cHRM sRGB pHYs sBIT bKGD hIST tIME acTL fcTL fdAT".split()
)
_JPEG_BINARY = frozenset({0xC4, 0xCC, 0xDA, 0xDB, 0xDD, *range(0xC0, 0xD0)})
_WEBP_BINARY = frozenset({b"VP8 ", b"VP8L", b"VP8X", b"ANIM", b"ANMF", b"ALPH"})
_EXIF_IFDS = {"Exif": ExifTags.IFD.Exif, "GPS": ExifTags.IFD.GPSInfo, "Interop": ExifTags.IFD.Interop}
_XP_TAGS = frozenset(range(0x9C9B, 0x9CA0))  # XPTitle ... XPSubject: UTF-16LE
_USER_COMMENT = 0x9286
_XMP_APP1 = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXTENDED = b"http://ns.adobe.com/xmp/extension/\x00"


class MetadataError(Exception):
    """A metadata block that cannot be decoded."""


@dataclass
class Metadata:
    """The metadata view (None when the image has none) and the problems met reading it."""

    view: TextView | None = None
    problems: list[Problem] = field(default_factory=list)


def metadata_view(
    data: bytes, file_type: str, limit: int = MAX_METADATA_BYTES, name: str = VIEW_NAME
) -> Metadata:
    """The text of every metadata block of `data` (sniffed as `file_type`), one "label: value" a line, as
    text view `name`; bounded by `limit` bytes of text."""
    out = Metadata()
    lines: list[str] = []
    used = 0
    fields = _FIELDS.get(file_type)
    if fields is None:
        return out
    try:
        for label, value in fields(data, out.problems):
            text = " ".join(value.split("\x00")).strip()
            if not text:
                continue
            line = f"{label}: {text}"
            size = len(line.encode("utf-8", "surrogatepass")) + 1
            if used + size > limit:
                lines.append(
                    line.encode("utf-8", "surrogatepass")[: max(limit - used, 0)].decode("utf-8", "ignore")
                )
                out.problems.append(
                    Problem(
                        Reason.TOO_LARGE,
                        f"more than {limit} bytes of text in the {file_type} image's metadata,"
                        f" only the first {limit} read (MAX_METADATA_BYTES)",
                        name,
                    )
                )
                break
            lines.append(line)
            used += size
    except EndNotFound:
        pass  # the image's framing is broken: `image end` reports it; what was read is judged
    except Image.DecompressionBombError as exc:  # TIFF: Pillow refuses to open it at all
        out.problems.append(Problem(Reason.TOO_LARGE, str(exc)[:200], name))
    except Exception as exc:  # Pillow's TIFF/EXIF parsers raise what they like on hostile input
        out.problems.append(Problem(Reason.DECODE_ERROR, f"{type(exc).__name__}: {exc}"[:200], name))
    if lines:
        provenance = {"source": "file", "part": "metadata", "fields": len(lines), "bytes": used}
        out.view = TextView(name, "\n".join(lines), "utf-8", provenance)
    return out


Fields = Iterator[tuple[str, str]]


def _png_fields(data: bytes, problems: list[Problem]) -> Fields:
    for kind, start, end in png_chunks(data):
        if kind in _PNG_BINARY:
            continue
        label = f"PNG {kind.decode('latin-1')}"
        body = data[start:end]
        try:
            if kind == b"tEXt":
                key, _, value = body.partition(b"\x00")
                yield f"{label} {key.decode('latin-1')}", value.decode("latin-1")
            elif kind == b"zTXt":
                key, _, value = body.partition(b"\x00")
                yield f"{label} {key.decode('latin-1')}", _inflate(value[1:]).decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\x00")
                compressed, rest = rest[:1] == b"\x01", rest[2:]
                _language, _, rest = rest.partition(b"\x00")
                translated, _, value = rest.partition(b"\x00")
                text = (_inflate(value) if compressed else value).decode("utf-8", "replace")
                yield f"{label} {key.decode('latin-1')}", f"{translated.decode('utf-8', 'replace')} {text}"
            elif kind == b"eXIf":
                yield from _exif_fields(body, "PNG eXIf")
            elif kind == b"iCCP":
                key, _, value = body.partition(b"\x00")
                yield f"{label} {key.decode('latin-1')}", printable_strings(_inflate(value[1:]))
            else:
                yield label, printable_strings(body)
        except MetadataError as exc:
            problems.append(Problem(Reason.DECODE_ERROR, f"{label} chunk at byte {start - 8}: {exc}", SOURCE))


def _jpeg_fields(data: bytes, problems: list[Problem]) -> Fields:
    for marker, start, end in jpeg_segments(data):
        if marker in _JPEG_BINARY:
            continue
        body = data[start:end]
        try:
            if marker == 0xFE:
                yield "JPEG comment", as_text(body)[0]
            elif marker == 0xE1 and body.startswith(b"Exif\x00"):
                yield from _exif_fields(body, "EXIF")
            elif marker == 0xE1 and body.startswith(_XMP_APP1):
                yield "XMP", as_text(body[len(_XMP_APP1) :])[0]
            elif marker == 0xE1 and body.startswith(_XMP_EXTENDED):
                yield "XMP extended", as_text(body[len(_XMP_EXTENDED) + 40 :])[0]
            else:
                yield (
                    f"JPEG APP{marker - 0xE0}" if 0xE0 <= marker <= 0xEF else f"JPEG 0x{marker:02X}",
                    (printable_strings(body)),
                )
        except MetadataError as exc:
            problems.append(Problem(Reason.DECODE_ERROR, f"JPEG segment at byte {start - 4}: {exc}", SOURCE))


def _gif_fields(data: bytes, problems: list[Problem]) -> Fields:
    for label, start, end, joined in gif_extensions(data):
        if label == 0xFE:
            yield "GIF comment", as_text(joined)[0]
        elif label == 0x01:
            yield "GIF plain text", as_text(joined[12:])[0]
        elif label == 0xFF:  # application: XMP's "sub-blocks" are its raw text, length bytes included
            yield "GIF application", as_text(data[start:end])[0]
        elif label != 0xF9:
            yield f"GIF extension 0x{label:02X}", printable_strings(joined)


def _webp_fields(data: bytes, problems: list[Problem]) -> Fields:
    for kind, start, end in riff_chunks(data):
        name = kind.decode("latin-1").strip()
        body = data[start:end]
        try:
            if kind in _WEBP_BINARY:
                continue
            if kind == b"EXIF":
                yield from _exif_fields(body, "EXIF")
            elif kind == b"XMP ":
                yield "XMP", as_text(body)[0]
            else:
                yield f"WebP {name}", printable_strings(body)
        except MetadataError as exc:
            problems.append(
                Problem(Reason.DECODE_ERROR, f"WebP {name} chunk at byte {start - 8}: {exc}", SOURCE)
            )


def _tiff_fields(data: bytes, problems: list[Problem]) -> Fields:
    """Every text or byte tag of each page's IFD and its EXIF sub-IFDs (Pillow parses the IFDs; seeking
    to a page decodes none of its pixels)."""
    with Image.open(io.BytesIO(data), formats=("TIFF",)) as image:
        for page in range(MAX_TIFF_PAGES + 1):
            if page:
                try:
                    image.seek(page)
                except EOFError:
                    return
                if page == MAX_TIFF_PAGES:
                    problems.append(
                        Problem(
                            Reason.TOO_LARGE, f"TIFF pages past {MAX_TIFF_PAGES}: their tags not read", SOURCE
                        )
                    )
                    return
            where = f"TIFF page {page + 1}" if page else "TIFF"
            for tag, value in image.tag_v2.items():
                if tag in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo, ExifTags.IFD.Interop):
                    continue
                text = _tag_text(tag, value, "<" if image.tag_v2._endian == "<" else ">")
                if text:
                    yield f"{where} {_tiff_tag_name(tag)}", text
            exif = image.getexif()
            for ifd_name, ifd in _EXIF_IFDS.items():
                for tag, value in exif.get_ifd(ifd).items():
                    text = _tag_text(tag, value, exif.endian or "<")
                    if text:
                        yield f"{where} {ifd_name} {_tag_name(tag, ifd_name)}", text


def _exif_fields(blob: bytes, label: str) -> Fields:
    """The string and byte tags of an EXIF block (IFD0, Exif, GPS, Interop), UserComment decoded."""
    exif = Image.Exif()
    try:
        exif.load(blob)
        tags = [("", tag, value) for tag, value in exif.items()]
        for ifd_name, ifd in _EXIF_IFDS.items():
            tags.extend((f"{ifd_name} ", tag, value) for tag, value in exif.get_ifd(ifd).items())
    except Exception as exc:
        raise MetadataError(f"cannot parse EXIF: {type(exc).__name__}: {exc}"[:200]) from None
    endian = getattr(exif, "endian", None) or "<"
    for prefix, tag, value in tags:
        if not prefix and tag in _EXIF_IFDS.values():
            continue
        text = _tag_text(tag, value, endian)
        if text:
            yield f"{label} {prefix}{_tag_name(tag, prefix.strip())}", text


def _tiff_tag_name(tag: int) -> str:
    name = TiffTags.lookup(tag).name
    return name if name != "unknown" else _tag_name(tag, "")


def _tag_name(tag: int, ifd: str) -> str:
    table = ExifTags.GPSTAGS if ifd == "GPS" else ExifTags.TAGS
    return table.get(tag, f"tag {tag}")


def _tag_text(tag: int, value: object, endian: str) -> str:
    """The text of a tag's value: strings as they are, bytes decoded (UserComment by its charset code,
    the XP tags as UTF-16LE, others as text or their printable strings); numbers give none."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
        return " ".join(value)
    if not isinstance(value, bytes):
        return ""
    if tag == _USER_COMMENT and len(value) >= 8:
        code, body = value[:8], value[8:]
        if code.startswith(b"UNICODE"):  # in the EXIF's byte order, which writers get wrong: ASCII tells
            high_first = body[0::2].count(0) > body[1::2].count(0)
            little = endian == "<" if body[0::2].count(0) == body[1::2].count(0) else not high_first
            return body.decode("utf-16-le" if little else "utf-16-be", "replace")
        if code.startswith(b"ASCII"):
            return body.decode("latin-1")
        if code.startswith(b"JIS"):
            return body.decode("iso2022_jp", "replace")
    if tag in _XP_TAGS:
        return value.decode("utf-16-le", "replace")
    return as_text(value)[0]


def _inflate(compressed: bytes) -> bytes:
    """Inflate a zlib stream, at most MAX_METADATA_BYTES + 1 bytes of it (the cap tells the rest)."""
    try:
        return zlib.decompressobj().decompress(compressed, MAX_METADATA_BYTES + 1)
    except zlib.error as exc:
        raise MetadataError(f"cannot decompress ({exc})") from None


_FIELDS = {
    "png": _png_fields,
    "jpeg": _jpeg_fields,
    "gif": _gif_fields,
    "webp": _webp_fields,
    "tiff": _tiff_fields,
}
