"""RTF as text with a small, bounded, stdlib-only reader: control words skipped, \\'xx and \\uN decoded."""

from __future__ import annotations

import codecs
import re

from dropwarden_documents.walk import LimitReached, Walker, Within

MAX_GROUPS = 1000  # nesting of { } groups
_TOKEN = re.compile(
    rb"\\([a-zA-Z]{1,32})(-?\d{1,10})? ?"  # control word, optional parameter, one delimiting space
    rb"|\\'([0-9a-fA-F]{2})"  # a byte in the document's code page
    rb"|\\([^a-zA-Z'])"  # control symbol: \\ \{ \} \~ \- \_ \* ...
    rb"|([{}])"
    rb"|([^\\{}\r\n]+)"  # literal text
    rb"|[\r\n]+"  # line ends in the source mean nothing
)
# Groups whose content is not text (tables of fonts, colours and styles, pictures, objects, ...).
_SKIPPED = frozenset(
    {
        b"fonttbl", b"colortbl", b"stylesheet", b"listtable", b"listoverridetable", b"rsidtbl", b"pict",
        b"object", b"objdata", b"themedata", b"colorschememapping", b"datastore", b"latentstyles",
        b"xmlnstbl", b"generator", b"filetbl", b"revtbl", b"bkmkstart", b"bkmkend", b"fldinst",
        b"pgdsctbl", b"wgrffmtfilter", b"mmathPr", b"passwordhash", b"bin",
    }
)  # fmt: skip
_BREAKS = {
    b"par": "\n",
    b"line": "\n",
    b"row": "\n",
    b"sect": "\n",
    b"page": "\n",
    b"tab": "\t",
    b"cell": "\t",
}
_SYMBOLS = {b"~": " ", b"_": "-", b"\\": "\\", b"{": "{", b"}": "}"}
_CHARSETS = {128: "cp932", 129: "cp949", 134: "gbk", 136: "big5", 161: "cp1253", 162: "cp1254", 204: "cp1251"}


def is_rtf(data: bytes) -> bool:
    return data[:65536].lstrip()[:5] == b"{\\rtf"


class _Reader:
    def __init__(self, limit: int) -> None:
        self.out: list[str] = []
        self.pending = bytearray()  # \'xx bytes and literal text, decoded together (multi-byte code pages)
        self.codepage = "cp1252"
        self.fonts: dict[int, str] = {}  # font number -> code page, from \fN\fcharsetN in the font table
        self.size = 0
        self.limit = limit

    def flush(self, codepage: str) -> None:
        if self.pending:
            self.emit(bytes(self.pending).decode(codepage, errors="replace"))
            self.pending.clear()

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > self.limit:
            raise LimitReached("more than documents.max_text_chars characters of text", fatal=True)
        self.out.append(text)


def rtf_text(data: bytes, limit: int) -> str:
    """The text of an RTF document (headers, footers, footnotes and fields' results included)."""
    reader = _Reader(limit)
    # per group: (skipped, \ucN fallback count, current font's code page or None, font being defined)
    stack: list[list] = [[False, 1, None, None]]
    skip_chars = 0  # fallback characters still to drop after a \uN
    star = False  # a {\* ...} group: an unknown destination is skipped whole
    for match in _TOKEN.finditer(data):
        state = stack[-1]
        codepage = state[2] or reader.codepage
        word, param, hexbyte, symbol, brace, literal = match.groups()
        if brace == b"{":
            reader.flush(codepage)
            if len(stack) >= MAX_GROUPS:
                raise LimitReached(f"RTF groups nested deeper than {MAX_GROUPS}")
            stack.append(list(state))
            star = False
            continue
        if brace == b"}":
            reader.flush(codepage)
            if len(stack) > 1:
                stack.pop()
            skip_chars = 0
            continue
        if state[0]:  # inside a skipped group: only the font table is read, for code pages
            if word in (b"f", b"fcharset") and param is not None:
                _font_table(reader, state, word, int(param))
            continue
        if word is not None:
            number = int(param) if param is not None else None
            if skip_chars and word not in (b"u",):
                skip_chars = 0
            if word in _SKIPPED or star:
                reader.flush(codepage)
                state[0] = True
                if word == b"fonttbl":
                    state[3] = -1
                star = False
            elif word == b"u" and number is not None:
                reader.flush(codepage)
                reader.emit(
                    chr(number % 65536) if number % 65536 < 0xD800 or number % 65536 > 0xDFFF else "?"
                )
                skip_chars = state[1]
            elif word == b"uc" and number is not None:
                state[1] = max(0, min(number, 10))
            elif word == b"ansicpg" and number is not None:
                reader.codepage = _codepage(f"cp{number}") or reader.codepage
            elif word == b"f" and number is not None:
                reader.flush(codepage)
                state[2] = reader.fonts.get(number)
            elif word in _BREAKS:
                reader.flush(codepage)
                reader.emit(_BREAKS[word])
            continue
        if symbol is not None:
            if symbol == b"*":
                star = True
            elif symbol in _SYMBOLS:
                reader.flush(codepage)
                reader.emit(_SYMBOLS[symbol])
            continue
        raw = bytes.fromhex(hexbyte.decode()) if hexbyte is not None else literal
        if raw is None:
            continue
        if skip_chars:
            dropped = min(skip_chars, len(raw) if literal is not None else 1)
            skip_chars -= dropped
            raw = raw[dropped:] if literal is not None else b""
        reader.pending += raw
    reader.flush(reader.codepage)
    return "".join(reader.out)


def _font_table(reader: _Reader, state: list, word: bytes, number: int) -> None:
    if state[3] is None:  # a skipped group other than the font table
        return
    if word == b"f":
        state[3] = number
    elif state[3] is not None and state[3] >= 0 and number in _CHARSETS:
        reader.fonts[state[3]] = _CHARSETS[number]


def _codepage(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def walk_rtf(walker: Walker, data: bytes, within: Within, depth: int) -> None:
    """An RTF document's text as one view (`within` ... "(rtf text)")."""
    limit = max(1, walker.limits.max_text_chars - walker.text_chars)
    walker.text(rtf_text(data, limit), (*within, "(rtf text)"))
