"""A worksheet's cells read by pattern in one C-level pass, once expat has vouched for the XML.

Why: a sheet is millions of tiny elements (`<c r="B2" t="s"><v>7</v></c>`); a Python callback per
element caps reading at a few MB/s. Expat (defused, no handlers) first checks the part is well-formed
UTF-8 XML without a DTD; on such XML the patterns below see exactly what the element callbacks of
`SheetCells` would. Anything unusual (a comment, CDATA, another encoding) goes back to the callbacks.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

from dropwarden_documents.anchors import PackedAnchors
from dropwarden_documents.walk import LimitReached
from dropwarden_documents.xmltext import defused_expat, feed

_PREFIX = r"(?:[A-Za-z_][\w.-]*:)?"
_ATTRS = r"(\s(?:[^>\"']|\"[^\"]*\"|'[^']*')*?)?"
# Any other cell (its attributes, its body), a row's start (its number, attributes, whether it closes
# itself) or a row's end, written after the "<": with groups to read one token, without to find it.
_GENERAL = (
    _PREFIX + r"(?:(c)" + _ATTRS + r"\s*(?:/>|>(.*?)</" + _PREFIX + r"c\s*>)"
    r"|(row)(?: r=\"([0-9]{1,9})\")?" + _ATTRS + r"\s*(/?)>)"
    r"|/" + _PREFIX + r"row\s*>"
)
_GENERAL_TOKEN = re.compile(_GENERAL, re.S)
# A cell as spreadsheet writers almost always write it (reference, type, value or inline text), with the
# start of its row (the row's number) when it is the row's first cell and the row's end when it is the
# last; or any other token whole (`_GENERAL`, read again on its own). Expat vouched for the XML first,
# so a tag opened here is closed as the pattern expects.
_TOKEN = re.compile(  # one literal "<" first: the engine skips to each tag in C
    r"<(?:"
    r'(?:row r="([0-9]{1,9}+)"(?: [\w:.-]++="[^"<]*+")*+><)?'
    r'c r="([A-Z]{1,3}+[0-9]{1,7}+)"(?: s="[0-9]{1,9}+")?(?: t="([a-zA-Z]{1,9}+)")?(?: s="[0-9]{1,9}+")?'
    r"(?:/>|>(?:<f>[^<&]*+</f>)?(?:(?:<v>|<is><t>)([^<&]*+)</(?:v>|t></is>))?</c>)(</row>)?"
    r"|(" + re.sub(r"\((?!\?)", "(?:", _GENERAL) + r"))",  # its own groups made non-capturing
    re.S,
)
_ROW_END = re.compile(r"</" + _PREFIX + r"row\s*>")  # where a slice of the sheet may end
_SLICE = 1 << 20
# A value inside a cell: `v` (a literal or a shared string's index) or `t` (inline string runs).
_VALUE = re.compile(r"<" + _PREFIX + r"(?:v|t)(?:\s(?:[^>\"']|\"[^\"]*\"|'[^']*')*?)?\s*>(.*?)</", re.S)
_TYPE = re.compile(r"\st\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_REF = re.compile(r"\sr\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_UTF8_DECLARATION = re.compile(rb"\A<\?xml[^>]*?encoding\s*=\s*[\"']\s*utf-?8\s*[\"']", re.I)
_ENTITY = re.compile(r"&(#x[0-9a-fA-F]+|#[0-9]+|lt|gt|amp|quot|apos);")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def fits(data: bytes, *, namespaces: bool = False, parsed: bool = False) -> bool:
    """Whether the patterns can read `data`: UTF-8 (no other encoding declared), no `<!` at all (no
    DTD, comment or CDATA section), and well-formed with nothing refused (else ParseError or a
    DefusedXmlException, as the callback path would report it; with `namespaces`, an unbound prefix
    too, as the callbacks' parser refuses it). `parsed`: expat read it whole already (not again)."""
    if b"<!" in data or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return False
    head = data.removeprefix(b"\xef\xbb\xbf")[:200]
    declaration = head.partition(b"?>")[0] if head.startswith(b"<?xml") else b""
    if b"encoding" in declaration and not _UTF8_DECLARATION.match(head):
        return False
    if not parsed:
        feed(defused_expat(namespaces=namespaces), data)
    return True


def scan_cells(data: bytes, shared: list[str], limit: int) -> tuple[str, PackedAnchors]:
    """(text, anchors) exactly as `SheetCells` makes them from XML that `fits`: a line per row, each
    cell's value and a tab, anchors (start, end, "cell B2"); beyond `limit` characters the file's text
    budget is spent (LimitReached, fatal). Read a slice of rows at a time, each slice's pieces joined
    at its end: all matches or pieces of a million-cell sheet at once would hold hundreds of MB."""
    text_slices: list[str] = []
    label_slices: list[str] = []
    offset = "i" if limit < 2**31 else "q"  # 4 bytes an offset where they fit (half the arrays to send)
    starts, ends = array(offset), array(offset)
    firsts, label_offsets = array("q"), array("q")  # each slice's first label and where it starts
    labels_size = 0
    place = _Place()
    for tokens in _slices(data.decode("utf-8-sig")):
        pieces, refs = _read_slice(tokens, shared, place, starts, ends)
        if place.size > limit:
            raise LimitReached("more than documents.max_text_chars characters of text", fatal=True)
        text_slices.append("".join(pieces))
        if refs:
            firsts.append(len(starts) - len(refs))
            label_offsets.append(labels_size)
            label_slices.append("\n".join(refs))
            labels_size += len(label_slices[-1]) + 1
    anchors = PackedAnchors(starts, ends, "\n".join(label_slices), "cell ", (firsts, label_offsets))
    return "".join(text_slices), anchors


class _Place:
    """Where the reading is between slices: the row and column (for a cell that names no reference),
    whether the current line holds a value yet (never at a slice's start: a slice ends after a row),
    the characters of text so far."""

    def __init__(self) -> None:
        self.row = self.column = self.size = 0
        self.line_open = False


def _read_slice(
    tokens: list[tuple[str, ...]], shared: list[str], place: _Place, starts: array, ends: array
) -> tuple[list[str], list[str]]:
    """(pieces, references) of a slice's tokens: the pieces of text (a cell's text, then "\t", or
    "\t\n" where its row ends) and the reference of each cell with a text, whose range goes to
    `starts` and `ends`."""
    pieces: list[str] = []
    refs: list[str] = []
    add_piece, add_ref, add_start, add_end = pieces.append, refs.append, starts.append, ends.append
    row, column, line_open, size = place.row, place.column, place.line_open, place.size
    for row_number, ref, kind, value, row_end, other in tokens:
        if ref:  # the common shape, caught whole
            if row_number:
                row = int(row_number)
                column = 0
            column += 1
            if kind == "s":
                index = int_or(value.strip(), -1)
                text = shared[index] if 0 <= index < len(shared) else ""
            elif not kind or kind == "n":
                text = plain_number(value.strip()) if "E" in value or "e" in value else value.strip()
            else:
                text = value if kind == "inlineStr" else value.strip()
            cell = _ROW_ENDS if row_end else _NOTHING
        else:
            row, column, cell = (row, column, _ROW_ENDS) if other == "/row>" else _general(other, row, column)
            if isinstance(cell, tuple):
                ref, kind, raw = cell
                text = cell_text(kind, raw, shared)
            else:
                text = ""
        if text:
            add_piece(text)
            add_piece("\t")
            add_ref(ref)
            add_start(size)
            size += len(text)
            add_end(size)
            size += 1
            line_open = True
        if cell is _ROW_ENDS and line_open:
            pieces[-1] = "\t\n"
            size += 1
            line_open = False
    place.row, place.column, place.line_open, place.size = row, column, line_open, size
    return pieces, refs


_ROW_ENDS = "row ends"
_NOTHING = "nothing to read"


def _general(token: str, row: int, column: int) -> tuple[int, int, tuple[str, str, str] | str]:
    """A token of an unusual shape (`_GENERAL`, after its "<"): the row and column after it, and what it
    is: a cell's (reference, type, raw value), _ROW_ENDS (a row's end tag, a row that closes itself) or
    _NOTHING (a row's start, a cell without a body)."""
    match = _GENERAL_TOKEN.match(token)
    if match is None:  # cannot be: the same pattern found it
        return row, column, _NOTHING
    is_cell, cell_attrs, body, is_row, number, attrs, closed = match.groups()
    if is_cell:
        column += 1
        if not body:
            return row, column, _NOTHING
        kind = _attribute(_TYPE, cell_attrs or "") or "n"
        raw = "".join(unescape(v) for v in _VALUE.findall(body))
        ref = _attribute(_REF, cell_attrs or "") or f"{column_name(column)}{row}"
        return row, column, (ref.replace("\n", " ")[:20], kind, raw)
    if is_row:
        row = int(number) if number else int_or(_attribute(_REF, attrs or ""), row + 1)
        return row, 0, _ROW_ENDS if closed else _NOTHING
    return row, column, _ROW_ENDS


def _slices(xml: str) -> Iterator[list[tuple[str, ...]]]:
    """`_TOKEN`'s matches, a slice of about _SLICE characters of whole rows at a time."""
    position = 0
    while position < len(xml):
        row_end = _ROW_END.search(xml, position + _SLICE)
        end = row_end.end() if row_end else len(xml)
        yield _TOKEN.findall(xml, position, end)
        position = end


def cell_text(cell_type: str, raw: str, shared: list[str]) -> str:
    """A cell's text from its type and raw value: a shared string by index, a number with all its
    digits, anything else as it stands (inline strings keep their spaces)."""
    raw = raw.strip() if cell_type != "inlineStr" else raw
    if cell_type == "s":
        index = int_or(raw, -1)
        return shared[index] if 0 <= index < len(shared) else ""
    if cell_type == "n":
        return plain_number(raw)
    return raw


def plain_number(raw: str) -> str:
    """A number cell as all its digits: "4.111111111111111E+15" -> "4111111111111111" (exponents
    within +-30 only, so a crafted "1E+999999" cannot blow up)."""
    if "e" not in raw.lower():
        return raw
    try:
        number = Decimal(raw)
    except InvalidOperation:
        return raw
    if not number.is_finite() or not -30 <= number.adjusted() <= 30:
        return raw
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def int_or(text: str | None, default: int) -> int:
    return int(text) if text and text.isdecimal() and len(text) < 10 else default


def column_name(index: int) -> str:
    """1 -> "A", 27 -> "AA"."""
    letters = ""
    while index > 0:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def unescape(text: str) -> str:
    return _ENTITY.sub(_character, text) if "&" in text else text


def _character(match: re.Match[str]) -> str:
    name = match.group(1)
    if name[0] != "#":
        return _NAMED[name]
    return chr(int(name[2:], 16) if name[1] == "x" else int(name[1:]))


def _attribute(pattern: re.Pattern[str], attrs: str) -> str:
    found = pattern.search(attrs)
    if found is None:
        return ""
    return unescape(found.group(1) or found.group(2))
