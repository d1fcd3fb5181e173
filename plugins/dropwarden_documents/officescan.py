"""A presentation's parts read by pattern once expat has vouched for the XML (`OfficeText`'s events).

Why: a slide is mostly elements that carry no text (shape, paragraph and run properties); a Python
callback for each of them was half of a deck's reading time. On XML that `fits` (UTF-8, nothing behind
a `<!`, well-formed, prefixes bound), the pattern below finds only the tags the target acts on (its
`NAMES`) and the processing instructions (whose content is no text), and hands them to it with the
character data between them as expat would report it: the same text, made by the same code. (A Word
body is mostly runs of text: there the callbacks are faster, and it stays with them.)
"""

from __future__ import annotations

import re
from functools import cache
from typing import Protocol

from dropwarden_documents.sheetscan import fits, unescape

_ATTRIBUTES = r"(?:[^>\"']|\"[^\"]*\"|'[^']*')*?"
_ANY_TAG = re.compile(r"<" + _ATTRIBUTES + r">", re.S)


@cache
def _tags(names: frozenset[str]) -> re.Pattern[str]:
    """A processing instruction whole, or a tag of `names` (any prefix): whether it ends an element,
    its local name, whether it closes itself."""
    alternatives = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    return re.compile(
        r"<(?:\?.*?\?>|(/?)(?:[^\s<>/:=\"']+:)?(" + alternatives + r")(?=[\s/>])" + _ATTRIBUTES + r"(/?)>)",
        re.S,
    )


class Events(Protocol):
    """What `replay` drives: `OfficeText`'s callbacks and whether it is inside a run of text."""

    NAMES: frozenset[str]
    inside: int

    def start(self, tag: str, attrib: dict[str, str]) -> None: ...
    def end(self, tag: str) -> None: ...
    def data(self, text: str) -> None: ...


def replay(data: bytes, target: Events) -> bool:
    """Feed `target` the events of `data` by pattern; False (nothing fed) when the XML does not `fit`
    (ParseError or a DefusedXmlException when it is damaged or refused, as through the callbacks)."""
    if not fits(data, namespaces=True):
        return False
    xml = data.decode("utf-8-sig")
    position = 0
    for tag in _tags(target.NAMES).finditer(xml):
        if target.inside > 0 and tag.start() > position:
            text = character_data(xml[position : tag.start()])
            if text:
                target.data(text)
        position = tag.end()
        closing, name, closed = tag.groups()
        if name is None:  # a processing instruction
            continue
        if closing:
            target.end(name)
            continue
        target.start(name, {})
        if closed:
            target.end(name)
    return True


def character_data(raw: str) -> str:
    """The character data of a stretch of XML between two tags `replay` found, as expat reports it:
    line ends normalised (before other tags are dropped: a "\\r" ends a line wherever it stands),
    tags dropped, references replaced."""
    if "\r" in raw:
        raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    if "<" in raw:
        raw = _ANY_TAG.sub("", raw)
    return unescape(raw)
