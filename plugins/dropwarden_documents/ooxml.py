"""Office Open XML (docx/docm, xlsx/xlsm, pptx): the text of every part, named by where it is."""

from __future__ import annotations

import posixpath
import re
import zipfile
from collections.abc import Sequence
from io import BytesIO
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException

from dropwarden.content import printable_strings, utf16le_strings
from dropwarden.views import ANCHOR_STEPS
from dropwarden_documents.officescan import replay
from dropwarden_documents.partpieces import Pieces
from dropwarden_documents.sheetscan import cell_text, column_name, fits, int_or, scan_cells
from dropwarden_documents.walk import CHUNK, Encrypted, LimitReached, Walker, Within
from dropwarden_documents.xmltext import TextTarget, local, parse, qualified
from dropwarden_documents.zipentry import plain_entry

# Parts with structure only (or binary fonts): every piece of them judged (`partpieces`), no text read.
_STRUCTURAL = re.compile(
    r"(?:^|/)(?:_rels/.*|\[Content_Types\]\.xml|theme/.*|styles(?:WithEffects)?\.xml|fontTable\.xml"
    r"|settings\.xml|webSettings\.xml|numbering\.xml|presProps\.xml|viewProps\.xml|tableStyles\.xml"
    r"|calcChain\.xml|printerSettings/.*|fonts/.*|[^/]*\.rels)$"
)
# Parts of key/value XML (document properties, custom XML data): every piece, as structural parts.
_PLAIN_XML = re.compile(r"^(?:docProps|customXml)/")
# The preview picture a writer saves of the first page: a rendering of parts read here as text and media,
# so never sent to OCR again once the main part was read (it cost ~0.5 s of OCR per Office file).
_THUMBNAIL = re.compile(r"^docProps/thumbnail\.[A-Za-z]{3,4}$")
_RELS_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_MAIN_KINDS = {"wordprocessingml": "word", "spreadsheetml": "excel", "presentationml": "powerpoint"}
_FOLDER_KINDS = {"word": "word", "xl": "excel", "ppt": "powerpoint"}


def is_ooxml(archive: zipfile.ZipFile) -> bool:
    names = set(archive.namelist())
    return "[Content_Types].xml" in names and "_rels/.rels" in names


class OfficeText(TextTarget):
    """Text of a Word, PowerPoint or drawing part: runs (`t`, tracked deletions `delText`, field codes
    `instrText`, chart values `v`, comment `text`) in order; paragraphs, rows and breaks as new lines,
    table cells and tabs as tabs. Text boxes, tracked insertions, math are runs like any other."""

    KEPT = frozenset({"t", "delText", "instrText", "v", "text"})
    LINE = frozenset({"p", "tr", "br", "cr", "v", "si", "comment", "cm"})
    TAB = frozenset({"tab"})
    NAMES = KEPT | LINE | TAB | {"tc"}  # every element acted on (`officescan` finds only these)

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.inside = 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        name = local(tag)
        if name in self.KEPT:
            self.inside += 1
        elif name in self.TAB and self.inside == 0:
            self.add("\t")

    def end(self, tag: str) -> None:
        name = local(tag)
        if name in self.KEPT:
            self.inside -= 1
        if name == "tc" and self.parts and self.parts[-1].endswith("\n"):
            self.parts[-1] = self.parts[-1][:-1] + "\t"  # a cell's last paragraph: the cell ends
        elif name in self.LINE and self.parts and not self.parts[-1].endswith("\n"):
            self.add("\n")

    def data(self, text: str) -> None:
        if self.inside > 0:
            self.add(text)


class SharedStrings(TextTarget):
    """xl/sharedStrings.xml: one string per `si` (its runs joined; phonetic guides `rPh` left out)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.strings: list[str] = []
        self.in_t = self.in_phonetic = False

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        name = local(tag)
        if name == "si":
            self.parts = []
        elif name == "t":
            self.in_t = True
        elif name == "rPh":
            self.in_phonetic = True

    def end(self, tag: str) -> None:
        name = local(tag)
        if name == "si":
            self.strings.append("".join(self.parts))
        elif name == "t":
            self.in_t = False
        elif name == "rPh":
            self.in_phonetic = False

    def data(self, text: str) -> None:
        if self.in_t and not self.in_phonetic:
            self.add(text)


class SheetCells(TextTarget):
    """A worksheet: each cell's value (shared, inline or literal; numbers with all their digits) on a
    line per row, tab between cells, with `anchors` (start, end, "cell B2")."""

    def __init__(self, limit: int, shared: list[str]) -> None:
        super().__init__(limit)
        self.shared = shared
        self.anchors: list[tuple[int, int, str]] = []
        self.value: list[str] = []
        self.collecting = False
        self.cell_type = "n"
        self.ref = ""
        self.row = 0
        self.column = 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        name = local(tag)
        if name == "row":
            self.row = int_or(attrib.get("r"), self.row + 1)
            self.column = 0
        elif name == "c":
            self.cell_type = attrib.get("t", "n")
            self.column += 1
            self.ref = attrib.get("r") or f"{column_name(self.column)}{self.row}"
            self.value = []
        elif name in ("v", "t"):
            self.collecting = True

    def end(self, tag: str) -> None:
        name = local(tag)
        if name in ("v", "t"):
            self.collecting = False
        elif name == "c":
            value = self.cell_value("".join(self.value))
            if value:
                start = self.size
                self.add(value)
                self.anchors.append((start, self.size, f"cell {self.ref[:20]}"))
                self.add("\t")
        elif name == "row" and self.parts and not self.parts[-1].endswith("\n"):
            self.add("\n")

    def data(self, text: str) -> None:
        if self.collecting:
            self.value.append(text)

    def cell_value(self, raw: str) -> str:
        return cell_text(self.cell_type, raw, self.shared)


class Package:
    """An open OOXML package: each part read at most once (counted against documents.max_members),
    relationships resolved, the parts read so far remembered; the text of its parts (all but sheets,
    which carry their cells) gathered into one view, each part's range anchored with where it is:
    a detection pass per part (36 for a 10-slide deck) cost more than reading them (`flush`)."""

    def __init__(self, walker: Walker, archive: zipfile.ZipFile, within: Within, data: bytes) -> None:
        self.walker = walker
        self.archive = archive
        self.within = within
        self.data = data  # the package's bytes (`archive` reads them)
        self.file_size = len(data)
        self.names = {info.filename for info in archive.infolist() if not info.is_dir()}
        self.done: set[str] = set()
        self.content_types: dict[str, str] | None = None
        self.pieces: list[str] = []
        self.anchors: list[tuple[int, int, str]] = []
        self.size = 0
        # Office text by pattern (`officescan`) in a presentation, whose parts are mostly shape
        # properties (15% faster there); a Word body is runs of text, read faster through callbacks.
        self.office_by_pattern = False
        self.leftovers = Pieces()  # what the readers leave out: structural parts, attribute values

    def add_text(self, text: str, where: Within) -> None:
        """The text of a part found at `where` (below the package), for the package's view; counted
        against the file's text budget at once."""
        if not text.strip():
            return
        separator = "\n" if self.pieces else ""  # parts apart as paragraphs are
        self.walker.count_text(len(separator) + len(text))
        start = self.size + len(separator)
        self.pieces += (separator, text)
        self.size = start + len(text)
        steps = (step.replace(ANCHOR_STEPS, " ") for step in where[len(self.within) :])
        self.anchors.append((start, self.size, ANCHOR_STEPS.join(steps)))

    def flush(self) -> None:
        """The package's view of the text gathered so far (called when the package is done, whatever
        ended it: what was read before a limit or damage is judged)."""
        if self.pieces:
            self.walker.text("".join(self.pieces), self.within, self.anchors, counted=True)
        self.pieces, self.anchors, self.size = [], [], 0

    def read(self, name: str) -> bytes | None:
        """A part's bytes (None: absent or read already)."""
        if name not in self.names or name in self.done:
            return None
        self.done.add(name)
        if len(self.done) > self.walker.limits.max_members:
            raise LimitReached(f"more than documents.max_members={self.walker.limits.max_members} parts")
        info = self.archive.getinfo(name)
        if info.flag_bits & 0x1:
            raise Encrypted("a part encrypted without a password")
        return self.member(info, min(info.compress_size, self.file_size))

    def member(self, info: zipfile.ZipInfo, compressed: int | None) -> bytes:
        """A member's bytes within the walk's limits: an ordinary small one straight from the package's
        bytes (`zipentry`), any other through `zipfile` (which reads or refuses it)."""
        content = plain_entry(self.data, info, CHUNK)
        if content is not None:
            return self.walker.whole_member(content, compressed, info.filename)
        with self.archive.open(info) as stream:
            return self.walker.read_member(stream, compressed, info.filename)

    def text_of(self, name: str, target: TextTarget, *, whole: bool = False) -> TextTarget | None:
        """`target` fed with part `name` (None: absent, read already or damaged: a problem); Office
        text by pattern where that is faster and the XML allows (`officescan`). What it leaves out
        is judged too: the part's attribute values, or with `whole` (a target that reads structure
        only) every piece of it."""
        data = self.read(name)
        if data is None:
            return None
        try:
            if not (self.office_by_pattern and isinstance(target, OfficeText) and replay(data, target)):
                parse(data, target)
        except (ParseError, DefusedXmlException) as exc:
            self.walker.problem("decode_error", f"damaged XML ({type(exc).__name__})", (*self.within, name))
            return None
        leftovers = self.leftovers
        leftover = leftovers.structural(data, parsed=True)[0] if whole else leftovers.attributes(data)
        self.add_text(leftover, (*self.within, name))
        return target

    def structural(self, name: str, *, main_read: bool) -> None:
        """Every piece of a part with no document text (`partpieces`); damage there is a problem only
        when no main part was read (what it held is judged all the same), a refused DTD or entity
        always (what it would have expanded to is never judged)."""
        data = self.read(name)
        if data is None:
            return
        if not name.endswith((".xml", ".rels")):  # printer settings, fonts: binaries
            self.add_text(
                printable_strings(data) + "\n" + utf16le_strings(data), (*self.within, name, "strings")
            )
            return
        text, error = self.leftovers.structural(data)
        self.add_text(text, (*self.within, name))
        if isinstance(error, DefusedXmlException) or (error is not None and not main_read):
            self.walker.problem("decode_error", f"damaged XML ({type(error).__name__})", (*self.within, name))

    def sheet(self, name: str, shared: list[str]) -> tuple[str, Sequence[tuple[int, int, str]]] | None:
        """A worksheet's (text, cell anchors): read by pattern where the XML allows (`sheetscan`),
        else through `SheetCells` (None: absent, read already or damaged: a problem)."""
        data = self.read(name)
        if data is None:
            return None
        try:
            if fits(data):
                cells = scan_cells(data, shared, self.budget())
            else:
                target = parse(data, SheetCells(self.budget(), shared))
                cells = target.text(), target.anchors
        except (ParseError, DefusedXmlException) as exc:
            self.walker.problem("decode_error", f"damaged XML ({type(exc).__name__})", (*self.within, name))
            return None
        self.add_text(self.leftovers.attributes(data, sheet=True), (*self.within, name))
        return cells

    def office_text(self, name: str, where: Within) -> None:
        target = self.text_of(name, OfficeText(self.budget()))
        if target is not None:
            self.add_text(target.text(), where)

    def budget(self) -> int:
        return max(1, self.walker.limits.max_text_chars - self.walker.text_chars)

    def relations(self, part: str) -> dict[str, str]:
        """Relationship id -> target part of `part` (internal targets only)."""
        folder, _, base = part.rpartition("/")
        rels = f"{folder}/_rels/{base}.rels" if folder else f"_rels/{base}.rels"
        if rels not in self.names:
            return {}
        data = self.member(self.archive.getinfo(rels), None)
        found: dict[str, str] = {}
        collector = _Relations(found, folder)
        try:
            parse(data, collector)
        except (ParseError, DefusedXmlException):
            self.walker.problem("decode_error", "damaged relationships", (*self.within, rels))
            return found
        self.parsed_structure(rels, data)
        return found

    def parsed_structure(self, name: str, data: bytes) -> None:
        """Every piece of structural part `name` whose XML a reader parsed already: done with."""
        self.add_text(self.leftovers.structural(data, parsed=True)[0], (*self.within, name))
        self.done.add(name)

    def main_kind(self) -> tuple[str, str] | None:
        """("word" | "excel" | "powerpoint", main part) from the package relationships."""
        for target in self.relations("").values():
            if target.endswith(".xml") and target in self.names:
                kind = self._content_kind(target) or _FOLDER_KINDS.get(target.partition("/")[0])
                if kind:
                    return kind, target
        return None

    def _content_kind(self, part: str) -> str | None:
        if self.content_types is None:
            name = "[Content_Types].xml"
            data = self.member(self.archive.getinfo(name), None)
            self.content_types = {}
            parse(data, _ContentTypes(self.content_types))
            self.parsed_structure(name, data)
        content_type = self.content_types.get("/" + part, "")
        return next((kind for key, kind in _MAIN_KINDS.items() if key in content_type), None)


class _Relations(TextTarget):
    def __init__(self, found: dict[str, str], folder: str) -> None:
        super().__init__(1)
        self.found = found
        self.folder = folder

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        external = attrib.get("TargetMode") == "External"
        if local(tag) == "Relationship" and not external and len(self.found) < 100_000:
            target = attrib.get("Target", "")
            path = target[1:] if target.startswith("/") else posixpath.join(self.folder, target)
            self.found[attrib.get("Id", "")] = posixpath.normpath(path).lstrip("/")


class _ContentTypes(TextTarget):
    def __init__(self, types: dict[str, str]) -> None:
        super().__init__(1)
        self.types = types

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if local(tag) == "Override" and len(self.types) < 100_000:
            self.types[attrib.get("PartName", "")] = attrib.get("ContentType", "")


class _Workbook(TextTarget):
    """xl/workbook.xml: (name, hidden, relationship id) of each sheet, in order."""

    def __init__(self) -> None:
        super().__init__(1)
        self.sheets: list[tuple[str, bool, str]] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if local(tag) == "sheet":
            hidden = attrib.get("state", "visible") != "visible"
            self.sheets.append((attrib.get("name", "?"), hidden, attrib.get(qualified(_RELS_NS, "id"), "")))


class _SlideList(TextTarget):
    """ppt/presentation.xml: the relationship id of each slide, in show order."""

    def __init__(self) -> None:
        super().__init__(1)
        self.ids: list[str] = []

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if local(tag) == "sldId":
            self.ids.append(attrib.get(qualified(_RELS_NS, "id"), ""))


def walk_ooxml(
    walker: Walker, data: bytes, within: Within, depth: int, archive: zipfile.ZipFile | None = None
) -> None:
    """A docx/xlsx/pptx: its main parts by their structure (sheets and cells, slides and notes), then
    every other part: XML as text, media as image views, embedded packages recursed. `archive`: the
    package already opened on `data` (by the typing that found it; closed here)."""
    with archive if archive is not None else zipfile.ZipFile(BytesIO(data)) as archive:
        package = Package(walker, archive, within, data)
        try:
            main = package.main_kind()
            if main is not None:
                kind, part = main
                if kind == "excel":
                    _excel(package, part)
                elif kind == "powerpoint":
                    package.office_by_pattern = True
                    _powerpoint(package, part)
                else:
                    package.office_text(part, (*within, part))
            _rest(package, depth, main_read=main is not None)
        finally:
            package.flush()


def _excel(package: Package, workbook_part: str) -> None:
    walker, within = package.walker, package.within
    relations = package.relations(workbook_part)
    shared: list[str] = []
    for part in relations.values():
        if part.endswith("sharedStrings.xml"):
            target = package.text_of(part, SharedStrings(package.budget()))
            shared = target.strings if isinstance(target, SharedStrings) else []
    workbook = package.text_of(workbook_part, _Workbook(), whole=True)
    for name, hidden, rid in workbook.sheets if isinstance(workbook, _Workbook) else []:
        label = f"sheet {name}" + (" (hidden)" if hidden else "")
        cells = package.sheet(relations.get(rid, ""), shared)
        if cells is not None:
            walker.text(cells[0], (*within, label), cells[1])


def _powerpoint(package: Package, presentation_part: str) -> None:
    relations = package.relations(presentation_part)
    slides = package.text_of(presentation_part, _SlideList(), whole=True)
    for number, rid in enumerate(slides.ids if isinstance(slides, _SlideList) else [], start=1):
        slide = relations.get(rid, "")
        where = (*package.within, f"slide {number}")
        package.office_text(slide, where)
        for target in package.relations(slide).values():
            if "notesSlide" in posixpath.basename(target):
                package.office_text(target, (*where, "notes"))


def _rest(package: Package, depth: int, *, main_read: bool) -> None:
    """Parts not read yet: structural and key/value XML piece by piece, other XML as text; a macro
    project's strings; media, embedded files and anything else recursed as a member (an image becomes
    an image view, a package is walked); the preview thumbnail only when no main part was read (then it
    is all there is of the document)."""
    walker, within = package.walker, package.within
    infos = [info for info in package.archive.infolist() if not info.is_dir()]
    for info in walker.members(infos, within):
        name = info.filename
        if name in package.done or (main_read and _THUMBNAIL.match(name)):
            continue
        if _STRUCTURAL.search(name) or (_PLAIN_XML.match(name) and name.endswith(".xml")):
            package.structural(name, main_read=main_read)
            continue
        where = (*within, name)
        if name.endswith(".xml"):
            package.office_text(name, where)
            continue
        data = package.read(name)
        if data is None:
            continue
        if name.endswith("vbaProject.bin"):  # macro code, compressed: its strings, yet no document part
            package.add_text(printable_strings(data) + "\n" + utf16le_strings(data), (*where, "strings"))
            continue
        walker.visit(data, where, depth + 1, name)
