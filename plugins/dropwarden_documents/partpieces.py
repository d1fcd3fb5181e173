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
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException

from dropwarden.content import printable_strings, utf16le_strings
from dropwarden_documents.sheetscan import fits, unescape
from dropwarden_documents.xmltext import defused_expat, feed

_MAX_SEEN = 200_000  # distinct pieces remembered per package (beyond: later ones judged again, not lost)
_NUMBER = r"-?[0-9]{1,8}"
_CELL = r"|\$?[A-Z]{1,3}\$?[0-9]{1,7}(?::\$?[A-Z]{1,3}\$?[0-9]{1,7})?|[0-9]{1,7}:[0-9]{1,7}"


def _attributes(inert: str) -> re.Pattern[str]:
    """An attribute's value unless it is `inert`. On XML that fits, a match starting in character data
    (`a="b"` is text there) cannot reach past its `<`, so every real attribute is matched as itself."""
    return re.compile(
        r"\s[^\s=<>\"'/]+\s*=\s*(?:\"(?!(?:" + inert + r")\")([^\"<]*)\"|'(?!(?:" + inert + r")')([^'<]*)')"
    )


_ATTRIBUTE = _attributes(_NUMBER)
_SHEET_ATTRIBUTE = _attributes(_NUMBER + _CELL)
# Character data: what follows a tag's `>` up to the next `<` (one that began inside an attribute value
# takes that value's tail along: more text, never less); processing instructions' content.
_CHARACTER_DATA = re.compile(r">([^<]*[^<\s][^<]*)<")
_INSTRUCTION = re.compile(r"<\?(.*?)\?>", re.S)
_INERT = re.compile(_NUMBER)
_INERT_IN_SHEET = re.compile(_NUMBER + _CELL)


class Pieces:
    """A package's pieces judged so far: each distinct one is put in a view once."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def fresh(self, values: Iterable[str]) -> str:
        """The pieces of `values` not seen before in this package, a line each."""
        kept: list[str] = []
        seen = self.seen
        for value in values:
            value = value.strip()
            if value and value not in seen:
                if len(seen) < _MAX_SEEN:
                    seen.add(value)
                kept.append(value)
        return "\n".join(kept)

    def structural(self, data: bytes) -> tuple[str, bool]:
        """(every piece of a structural part, whether it is damaged). Damaged: what expat read before
        the damage and the printable strings of the whole part (no byte of it goes unjudged)."""
        try:
            if fits(data, namespaces=True):
                xml = data.decode("utf-8-sig")
                values = [value for pair in _ATTRIBUTE.findall(xml) for value in pair]
                values += _CHARACTER_DATA.findall(xml) + _INSTRUCTION.findall(xml)
                return self.fresh(map(unescape, values)), False
            return self.fresh(_by_callbacks(data, character_data=True, found=[])), False
        except (ParseError, DefusedXmlException):
            found: list[str] = []
            try:
                _by_callbacks(data, character_data=True, found=found)
            except (ParseError, DefusedXmlException):
                pass
            found += (printable_strings(data), utf16le_strings(data))
            return self.fresh(found), True

    def attributes(self, data: bytes, *, sheet: bool = False) -> str:
        """The attribute values of a part read already (its XML is sound: its reader parsed it)."""
        try:
            if fits(data, namespaces=True, parsed=True):
                pattern = _SHEET_ATTRIBUTE if sheet else _ATTRIBUTE
                values = pattern.findall(data.decode("utf-8-sig"))
                return self.fresh(unescape(value) for pair in values for value in pair)
            inert = _INERT_IN_SHEET if sheet else _INERT
            found = _by_callbacks(data, character_data=False, found=[])
            return self.fresh(value for value in found if not inert.fullmatch(value))
        except (ParseError, DefusedXmlException):
            return ""  # its reader parsed it: it cannot be damaged here


def _by_callbacks(data: bytes, *, character_data: bool, found: list[str]) -> list[str]:
    """Pieces through expat's callbacks into `found` (kept on damage): attribute values, and with
    `character_data` character data, comments and processing instructions."""
    expat = defused_expat()
    expat.ordered_attributes = True
    expat.StartElementHandler = lambda name, attributes: found.extend(attributes[1::2])
    if character_data:
        expat.buffer_text = True
        expat.CharacterDataHandler = found.append
        expat.CommentHandler = found.append
        expat.ProcessingInstructionHandler = lambda target, text: found.append(f"{target} {text}")
    feed(expat, data)
    return found
