"""Legacy OLE2 compound files told apart by their streams: Word .doc, Excel .xls (xlrd), PowerPoint .ppt."""

from __future__ import annotations

import io
import struct
from decimal import Decimal

import olefile
import xlrd

from dropwarden.content import printable_strings, utf16le_strings
from dropwarden_documents.msg import is_msg, walk_msg
from dropwarden_documents.olestream import Damaged, open_ole, read_stream
from dropwarden_documents.walk import Encrypted, LimitReached, Walker, Within

MAX_PIECES = 100_000  # pieces of a Word piece table
MAX_RECORDS = 1_000_000  # records of a PowerPoint stream
MAX_RECORD_NESTING = 64


def walk_ole(walker: Walker, data: bytes, within: Within, depth: int) -> None:
    """An OLE2 compound file by the streams it holds: .doc, .xls, .ppt, Outlook .msg; any other one is a
    binary nothing understands (its strings judged, the file unsupported_type). Damage names its part."""
    try:
        ole = open_ole(data)
    except Damaged as exc:
        walker.problem("decode_error", f"damaged: {exc}", within)
        return
    try:
        if ole.exists("WordDocument"):
            walk_doc(walker, ole, within)
        elif ole.exists("Workbook") or ole.exists("Book"):
            walk_xls(walker, data, within)
        elif ole.exists("PowerPoint Document"):
            walk_ppt(walker, ole, within)
        elif is_msg(ole):
            walk_msg(walker, ole, within, depth)
        else:
            walker.text(printable_strings(data) + "\n" + utf16le_strings(data), (*within, "strings"))
            walker.problem("unsupported_type", "no extractor understands this OLE compound file", within)
    except Damaged as exc:
        walker.problem("decode_error", f"damaged: {exc}", within)
    finally:
        ole.close()


# ---------------------------------------------------------------- Excel


def walk_xls(walker: Walker, data: bytes, within: Within) -> None:
    """Every sheet (hidden ones too, `sheet Name (hidden)`) cell by cell, numbers with all their digits,
    each cell anchored (`cell B2`)."""
    try:
        book = xlrd.open_workbook(file_contents=data, logfile=io.StringIO(), on_demand=True)
    except xlrd.compdoc.CompDocError:
        raise Damaged("compound file structure (as Excel reads it)") from None
    except xlrd.XLRDError as exc:
        if "encrypt" in str(exc).lower():
            raise Encrypted("an Excel workbook encrypted without a password") from None
        raise Damaged("Workbook stream") from None
    except (ValueError, IndexError, KeyError, struct.error, AssertionError, UnicodeDecodeError) as exc:
        raise Damaged(f"Workbook stream ({type(exc).__name__})") from None
    walker.charge(len(data))
    try:
        for index in walker.members(range(book.nsheets), within):
            try:
                sheet = book.get_sheet(index)
            except (xlrd.XLRDError, ValueError, IndexError, KeyError, struct.error, AssertionError) as exc:
                walker.problem("decode_error", f"damaged sheet {index + 1} ({type(exc).__name__})", within)
                continue
            label = f"sheet {sheet.name}" + (" (hidden)" if sheet.visibility else "")
            text, anchors = _sheet_text(sheet)
            walker.text(text, (*within, label), anchors)
            book.unload_sheet(index)
    finally:
        book.release_resources()


def _sheet_text(sheet: xlrd.sheet.Sheet) -> tuple[str, list[tuple[int, int, str]]]:
    parts: list[str] = []
    anchors: list[tuple[int, int, str]] = []
    size = 0
    for row in range(sheet.nrows):
        for column, cell in enumerate(sheet.row(row)):
            value = _cell_text(cell)
            if not value:
                continue
            anchors.append((size, size + len(value), f"cell {xlrd.formula.cellname(row, column)}"))
            parts.append(value + "\t")
            size += len(value) + 1
        parts.append("\n")
        size += 1
    return "".join(parts), anchors


def _cell_text(cell: xlrd.sheet.Cell) -> str:
    if cell.ctype == xlrd.XL_CELL_NUMBER:
        number = float(cell.value)
        if number.is_integer() and abs(number) < 1e30:
            return str(int(number))
        text = format(Decimal(repr(number)), "f") if abs(number) < 1e30 else repr(number)
        return text.rstrip("0").rstrip(".") if "." in text else text
    if cell.ctype in (xlrd.XL_CELL_TEXT, xlrd.XL_CELL_DATE):
        return str(cell.value)
    return ""


# ---------------------------------------------------------------- Word


def walk_doc(walker: Walker, ole: olefile.OleFileIO, within: Within) -> None:
    """The text of a Word 97+ document through its piece table (the FIB's clx in the 0Table/1Table
    stream), `within` ... "WordDocument"; a piece table that cannot be read: the stream's UTF-16LE and
    8-bit text runs, `WordDocument (text runs)`, and a problem saying so."""
    word = read_stream(walker, ole, "WordDocument")
    if len(word) < 32 or struct.unpack_from("<H", word, 0)[0] != 0xA5EC:
        raise Damaged("WordDocument stream: no Word 97 file information block")
    flags = struct.unpack_from("<H", word, 0x0A)[0]
    if flags & 0x0100:
        raise Encrypted("a Word document encrypted without a password")
    table_name = "1Table" if flags & 0x0200 else "0Table"
    try:
        table = read_stream(walker, ole, table_name) if ole.exists(table_name) else b""
        text = _piece_table_text(word, table)
    except Damaged as exc:
        walker.text(
            printable_strings(word) + "\n" + utf16le_strings(word), (*within, "WordDocument (text runs)")
        )
        walker.problem("decode_error", f"piece table unreadable ({exc}); judged by its text runs", within)
        return
    walker.text(text, (*within, "WordDocument"))


def _piece_table_text(word: bytes, table: bytes) -> str:
    try:
        csw = struct.unpack_from("<H", word, 32)[0]
        cslw_at = 34 + csw * 2
        cslw = struct.unpack_from("<H", word, cslw_at)[0]
        fc_lcb_at = cslw_at + 2 + cslw * 4 + 2
        fc_clx, lcb_clx = struct.unpack_from("<II", word, fc_lcb_at + 33 * 8)
    except struct.error:
        raise Damaged("file information block too short") from None
    if not table or lcb_clx == 0 or fc_clx + lcb_clx > len(table):
        raise Damaged("clx outside the table stream")
    clx = table[fc_clx : fc_clx + lcb_clx]
    at = 0
    while at < len(clx) and clx[at] == 0x01:  # Prc: formatting, skipped
        if at + 3 > len(clx):
            raise Damaged("clx: truncated Prc")
        at += 3 + struct.unpack_from("<H", clx, at + 1)[0]
    if at + 5 > len(clx) or clx[at] != 0x02:
        raise Damaged("clx: no piece table")
    lcb = struct.unpack_from("<I", clx, at + 1)[0]
    plc = clx[at + 5 : at + 5 + lcb]
    if lcb < 16 or len(plc) < lcb or (lcb - 4) % 12:
        raise Damaged("piece table size")
    count = (lcb - 4) // 12
    if count > MAX_PIECES:
        raise Damaged("piece table: too many pieces")
    cps = struct.unpack_from(f"<{count + 1}I", plc, 0)
    parts: list[str] = []
    total = 0
    for index in range(count):
        length = cps[index + 1] - cps[index]
        total += max(length, 0)
        if length < 0 or total > len(word):  # pieces never overlap: their text fits in the stream
            raise Damaged("piece table: character positions out of order or overlapping")
        fc = struct.unpack_from("<I", plc, 4 * (count + 1) + 8 * index + 2)[0]
        if fc & 0x40000000:  # compressed: 8-bit (cp1252) at fc / 2
            start = (fc & 0x3FFFFFFF) // 2
            raw = word[start : start + length]
            parts.append(raw.decode("cp1252", errors="replace"))
        else:
            raw = word[fc : fc + 2 * length]
            parts.append(raw.decode("utf-16-le", errors="replace"))
        if len(raw) < length:
            raise Damaged("piece table: a piece beyond the WordDocument stream")
    return "".join(parts).replace("\r", "\n").replace("\x07", "\t")


# ---------------------------------------------------------------- PowerPoint

_TEXT_CHARS, _TEXT_BYTES = 0x0FA0, 0x0FA8
_SLIDE_LIST, _SLIDE_PERSIST = 0x0FF0, 0x03F3
_SLIDE, _NOTES = 0x03EE, 0x03F0


def walk_ppt(walker: Walker, ole: olefile.OleFileIO, within: Within) -> None:
    """Text atoms (TextCharsAtom UTF-16LE, TextBytesAtom 8-bit) through the record tree of the
    "PowerPoint Document" stream: in the slide list after the n-th slide's persist atom `slide n` (notes
    list: `notes n`), in the n-th slide / notes container likewise, elsewhere `PowerPoint Document`."""
    if ole.exists("EncryptedSummary"):
        raise Encrypted("a PowerPoint presentation encrypted without a password")
    stream = read_stream(walker, ole, "PowerPoint Document")
    texts: dict[str, list[str]] = {}
    counters = {"slide": 0, "notes": 0}
    # (end offset, label of the text inside, slide list kind or None)
    stack: list[tuple[int, str, str | None]] = [(len(stream), "PowerPoint Document", None)]
    at = records = 0
    while at + 8 <= len(stream):
        while len(stack) > 1 and at >= stack[-1][0]:
            stack.pop()
        records += 1
        if records > MAX_RECORDS:
            raise LimitReached(f"PowerPoint Document: more than {MAX_RECORDS} records")
        version_instance, kind, length = struct.unpack_from("<HHI", stream, at)
        body = at + 8
        label, list_kind = stack[-1][1], stack[-1][2]
        if version_instance & 0x0F == 0x0F:  # a container: its children follow
            if len(stack) > MAX_RECORD_NESTING:
                raise Damaged("PowerPoint Document: records nested too deep")
            end = min(body + length, stack[-1][0])
            instance = version_instance >> 4
            if kind == _SLIDE_LIST:
                list_kind = {0: "slide", 2: "notes"}.get(instance, "master")
            elif kind in (_SLIDE, _NOTES):
                name = "slide" if kind == _SLIDE else "notes"
                counters[name] += 1
                label = f"{name} {counters[name]}"
            stack.append((end, label, list_kind))
            at = body
            continue
        if kind == _SLIDE_PERSIST and list_kind in ("slide", "notes"):
            stack[-1] = (stack[-1][0], _next_slide(list_kind, label), list_kind)
        elif kind in (_TEXT_CHARS, _TEXT_BYTES):
            raw = stream[body : body + length]
            text = raw.decode("utf-16-le" if kind == _TEXT_CHARS else "cp1252", errors="replace")
            texts.setdefault(label, []).append(text.replace("\r", "\n") + "\n")
        at = body + length
    for label, parts in walker.members(list(texts.items()), within):
        walker.text("".join(parts), (*within, label))


def _next_slide(list_kind: str, current: str) -> str:
    """The label of the slide a persist atom starts: one past the current one of this list."""
    prefix = f"{list_kind} "
    number = int(current[len(prefix) :]) if current.startswith(prefix) else 0
    return f"{prefix}{number + 1}"
