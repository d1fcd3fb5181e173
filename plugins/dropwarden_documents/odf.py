"""OpenDocument (odt/ods/odp): content, styles (headers, footers) and metadata through a defused parser;
settings and manifests piece by piece, and every part's attribute values (`partpieces`)."""

from __future__ import annotations

import zipfile
from io import BytesIO
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException

from dropwarden_documents.partpieces import Pieces
from dropwarden_documents.sheetscan import plain_number
from dropwarden_documents.walk import Encrypted, Walker, Within
from dropwarden_documents.xmltext import TextTarget, local, parse, qualified

_OFFICE_NS = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_TABLE_NS = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_NUMERIC = frozenset({"float", "currency", "percentage"})
# Parts with no document text: every piece of them judged, none read as text.
_STRUCTURAL_PARTS = frozenset({"settings.xml", "META-INF/manifest.xml", "manifest.rdf"})


def is_odf(archive: zipfile.ZipFile) -> bool:
    try:
        return archive.read("mimetype")[:64].startswith(b"application/vnd.oasis.opendocument.")
    except KeyError:
        return False


class OdfText(TextTarget):
    """Paragraphs and headings as lines, tabs, spaces (`text:s`) and line breaks as such; table cells
    tab-separated, rows as lines; a numeric cell as its `office:value` with all its digits (its
    displayed text may be "4.11E+15"); each table (a sheet) an anchor "sheet <name>"."""

    LINE = frozenset({"p", "h", "line-break", "table-row", "list-item", "note-body"})

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.anchors: list[tuple[int, int, str]] = []
        self.tables: list[tuple[int, str]] = []
        self.numeric_cell = 0  # depth inside a cell whose displayed text is replaced by its value
        self.values: set[str] = set()  # the `office:value`s read (their attributes judged already)

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        name = local(tag)
        if name == "table":
            self.tables.append((self.size, attrib.get(qualified(_TABLE_NS, "name"), "?")))
        elif name == "table-cell" and attrib.get(qualified(_OFFICE_NS, "value-type")) in _NUMERIC:
            value = attrib.get(qualified(_OFFICE_NS, "value"))
            if value:
                self.add(plain_number(value))
                if len(self.values) < 100_000:
                    self.values.add(value)
                self.numeric_cell += 1
        elif self.numeric_cell:
            if name == "table-cell":
                self.numeric_cell += 1
        elif name == "tab":
            self.add("\t")
        elif name == "s":
            self.add(" " * min(_count(attrib), 100))

    def end(self, tag: str) -> None:
        name = local(tag)
        if name == "table-cell":
            if self.numeric_cell:
                self.numeric_cell -= 1
            if self.parts and self.parts[-1].endswith("\n"):
                self.parts[-1] = self.parts[-1][:-1]
            self.add("\t")
        elif name == "table" and self.tables:
            start, table = self.tables.pop()
            self.anchors.append((start, self.size, f"sheet {table}"))
        if name in self.LINE and not self.numeric_cell and self.parts and not self.parts[-1].endswith("\n"):
            self.add("\n")

    def data(self, text: str) -> None:
        if not self.numeric_cell and text.strip():
            self.add(text)


def _count(attrib: dict[str, str]) -> int:
    value = next((v for k, v in attrib.items() if local(k) == "c"), "1")
    return int(value) if value.isdigit() and len(value) < 4 else 1


def walk_odf(walker: Walker, data: bytes, within: Within, depth: int) -> None:
    """Every XML part (content, styles with headers and footers, meta, embedded objects' content) as a
    view named by its part, its attribute values with it; settings and manifests piece by piece (their
    damage a problem only when no content part was read); pictures and other files (the mimetype too)
    recursed as members."""
    with zipfile.ZipFile(BytesIO(data)) as archive:
        if _encrypted(archive):
            raise Encrypted("OpenDocument encrypted without a password")
        infos = [info for info in archive.infolist() if not info.is_dir()]
        pieces = Pieces()
        damaged: list[str] = []
        content_read = False
        for info in walker.members(infos, within):
            name = info.filename
            if info.flag_bits & 0x1:
                walker.problem("encrypted", "a part encrypted without a password", (*within, name))
                continue
            with archive.open(info) as stream:
                part = walker.read_member(stream, min(info.compress_size, len(data)), name)
            where = (*within, name)
            if name in _STRUCTURAL_PARTS or name.endswith("/settings.xml") or name.endswith(".rdf"):
                text, error = pieces.structural(part)
                walker.text(text, where)
                if isinstance(error, DefusedXmlException):
                    walker.problem("decode_error", f"damaged XML ({type(error).__name__})", where)
                elif error is not None:
                    damaged.append(name)
                continue
            if not name.endswith(".xml"):
                walker.visit(part, where, depth + 1, name)
                continue
            target = OdfText(max(1, walker.limits.max_text_chars - walker.text_chars))
            try:
                parse(part, target)
            except (ParseError, DefusedXmlException) as exc:
                walker.problem("decode_error", f"damaged XML ({type(exc).__name__})", where)
                continue
            content_read = content_read or name == "content.xml"
            pieces.seen.update(target.values)
            _text_and_attributes(walker, target, pieces.attributes(part), where)
        for name in damaged if not content_read else ():
            walker.problem("decode_error", "damaged XML", (*within, name))


def _text_and_attributes(walker: Walker, target: OdfText, attributes: str, where: Within) -> None:
    """A part's view: its text (tables anchored as sheets), then its attribute values."""
    text = target.text()
    if attributes:
        text += ("\n" if text else "") + attributes
    sheets = sorted(target.anchors)
    walker.text(text, where, sheets if len(sheets) < 100_000 else None)


def _encrypted(archive: zipfile.ZipFile) -> bool:
    """ODF encryption is declared in the manifest (the zip itself is not encrypted)."""
    try:
        manifest = archive.read("META-INF/manifest.xml")
    except KeyError:
        return False
    return b"encryption-data" in manifest[:1_000_000]
