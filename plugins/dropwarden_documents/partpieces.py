"""What the readers of a package leave out, for every rule: structural parts whole, attribute values.

Why: a package's relationships, content types, styles, themes, settings and manifests carry no document
text, yet any of their attribute values or character data can hold a card number or a key (a style
named "4111 1111 1111 1111", an external link `https://x.example/?k=AKIA…`), and so can an attribute of
a part whose text is read (an image's alt text, a link). Each distinct piece goes on a line of its own
(pieces never run together into a look-alike); numbers of up to 8 digits (sizes, coordinates, ids) and,
in sheets, cell references are left out: they can hold nothing and are most of the attributes there.
On XML that `fits` (expat vouched for it: no `<` in a value or in character data, no comment), patterns
find the pieces in C; anything else goes through expat's callbacks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException

from dropwarden.content import printable_strings, utf16le_strings
from dropwarden_documents.sheetscan import fits, unescape
from dropwarden_documents.xmltext import defused_expat, feed

_MAX_SEEN = 200_000  # distinct pieces remembered per package (beyond: later ones judged again, not lost)
_NUMBER = r"-?[0-9]{1,8}"
# In a sheet, also: a cell's reference, a short word (a cell's type), a range, a row span.
_CELL = (
    r"[A-Z]{1,3}[0-9]{1,7}|[a-zA-Z]{1,9}"
    r"|\$?[A-Z]{1,3}\$?[0-9]{1,7}(?::\$?[A-Z]{1,3}\$?[0-9]{1,7})?|[0-9]{1,7}:[0-9]{1,7}|"
)


def _attributes(inert: str) -> re.Pattern[str]:
    """An attribute's value in its quotes unless it is `inert`, found from its `=` (a literal first: the
    engine skips to each in C). On XML that fits, a value holds no `<` and a match starting in
    character data (`a="b"` is text there) cannot reach past its `<`: every real attribute is matched
    as itself."""
    return re.compile(r"=\s*(\"(?!(?:" + inert + r")\")[^\"<]*\"|'(?!(?:" + inert + r")')[^'<]*')")


_ATTRIBUTE = _attributes(_NUMBER)
_SHEET_ATTRIBUTE = _attributes(_CELL + _NUMBER)  # the most common first: tried in order at every `=`
# Character data: what follows a tag's `>` up to the next `<` (one that began inside an attribute value
# takes that value's tail along: more text, never less); processing instructions' content.
_CHARACTER_DATA = re.compile(r">([^<]*[^<\s][^<]*)<")
_INSTRUCTION = re.compile(r"<\?(.*?)\?>", re.S)
# A sheet's character data that is no cell value: outside its cells (headers and footers, validations)
# and formulas (looked for only where one is written: a million cells cost no second scan).
_SHEET_DATA = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?sheetData[\s/>]")
_FORMULA = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?f(?:\s[^<>]*)?>([^<]+)<")
_INERT = re.compile(_NUMBER)
_INERT_IN_SHEET = re.compile(_CELL + _NUMBER)


class Pieces:
    """A package's pieces judged so far: each distinct one is put in a view once."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def fresh(self, values: Iterable[str], *, escaped: bool = False, quoted: bool = False) -> str:
        """The pieces of `values` (`escaped`: as written in XML; `quoted`: in their quotes) not seen
        before in this package, a line each (repeats dropped first, in C: most values repeat)."""
        kept: list[str] = []
        seen = self.seen
        for raw in dict.fromkeys(values):
            value = raw[1:-1] if quoted else raw
            value = (unescape(value) if escaped else value).strip()
            if value and value not in seen:
                if len(seen) < _MAX_SEEN:
                    seen.add(value)
                kept.append(value)
        return "\n".join(kept)

    def structural(self, data: bytes, *, parsed: bool = False) -> tuple[str, Exception | None]:
        """(every piece of a structural part, what was wrong with its XML: damage, a ParseError, or a
        refused DTD or entity, a DefusedXmlException; `parsed`: expat read it whole already). Then:
        what expat read before it and the printable strings of the rest (no byte goes unjudged)."""
        try:
            if fits(data, parsed=parsed):  # well-formed is all the patterns need (prefixes need not be bound)
                xml = data.decode("utf-8-sig")
                texts = _CHARACTER_DATA.findall(xml) + _INSTRUCTION.findall(xml)
                pieces = (self.fresh(_ATTRIBUTE.findall(xml), escaped=True, quoted=True),
                          self.fresh(texts, escaped=True))  # fmt: skip
                return "\n".join(piece for piece in pieces if piece), None
            return self.fresh(_by_callbacks(data, character_data=True, found=[])), None
        except (ParseError, DefusedXmlException) as exc:
            found: list[str] = []
            rest = _until_damage(data, found)
            found += (printable_strings(rest), utf16le_strings(rest))
            return self.fresh(found), exc

    def attributes(self, data: bytes, *, sheet: bool = False) -> str:
        """The attribute values of a part read already (its XML is sound: its reader parsed it)."""
        try:
            if fits(data, namespaces=True, parsed=True):
                xml = data.decode("utf-8-sig")
                if not sheet:
                    return self.fresh(_ATTRIBUTE.findall(xml), escaped=True, quoted=True)
                pieces = (self.fresh(_SHEET_ATTRIBUTE.findall(xml), escaped=True, quoted=True),
                          self.fresh(_sheet_texts(xml), escaped=True))  # fmt: skip
                return "\n".join(piece for piece in pieces if piece)
            inert = _INERT_IN_SHEET if sheet else _INERT
            found = _by_callbacks(data, character_data=False, found=[])
            return self.fresh(value for value in found if not inert.fullmatch(value))
        except (ParseError, DefusedXmlException):
            return ""  # its reader parsed it: it cannot be damaged here


def _sheet_texts(xml: str) -> list[str]:
    """A worksheet's character data that is no cell value (XML that fits)."""
    found = _SHEET_DATA.search(xml)
    if found is None:
        return []
    start = found.start()
    end = max(xml.rfind("sheetData", start + 1), start + 1)  # its end tag (searched from the end, in C)
    texts = _CHARACTER_DATA.findall(xml, 0, start + 1) + _CHARACTER_DATA.findall(xml, end)
    if any(xml.find(marker, start, end) >= 0 for marker in ("<f", ":f>", ":f ")):
        texts += _FORMULA.findall(xml, start, end)
    return texts


def _until_damage(data: bytes, found: list[str]) -> bytes:
    """Every piece of a damaged part up to its damage into `found`; what expat did not read (from the
    start of the tag the damage is in)."""
    expat = _collector(found, character_data=True)
    try:
        feed(expat, data)
    except (ParseError, DefusedXmlException):
        stopped = expat.ErrorByteIndex if expat.ErrorByteIndex >= 0 else expat.CurrentByteIndex
        return data[max(0, data.rfind(b"<", 0, max(0, stopped))) :]
    return b""


def _by_callbacks(data: bytes, *, character_data: bool, found: list[str]) -> list[str]:
    """Pieces through expat's callbacks into `found` (`_collector`)."""
    feed(_collector(found, character_data=character_data), data)
    return found


def _collector(found: list[str], *, character_data: bool) -> Any:
    """An expat parser that puts attribute values into `found`, and with `character_data` character
    data, comments and processing instructions."""
    expat = defused_expat(namespaces=False)
    expat.ordered_attributes = True
    expat.StartElementHandler = lambda name, attributes: found.extend(attributes[1::2])
    if character_data:
        expat.buffer_text = True
        expat.CharacterDataHandler = found.append
        expat.CommentHandler = found.append
        expat.ProcessingInstructionHandler = lambda target, text: found.append(f"{target} {text}")
    return expat
