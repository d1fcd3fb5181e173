"""Streaming, defused XML reading: a part's text through callbacks in document order, bounded in memory."""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import ParseError
from xml.parsers.expat import ErrorString, ExpatError, ParserCreate

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

from dropwarden_documents.walk import LimitReached

FEED = 1024 * 1024  # bytes handed to the parser at a time


_LOCAL_NAMES: dict[str, str] = {}


def local(tag: str) -> str:
    """An element's or attribute's name without its namespace ("ns}t" -> "t")."""
    name = _LOCAL_NAMES.get(tag)
    if name is None:
        name = tag.rpartition("}")[2]
        if len(_LOCAL_NAMES) < 10_000:
            _LOCAL_NAMES[tag] = name
    return name


def qualified(namespace: str, name: str) -> str:
    """How `parse` names an element or attribute of `namespace` ("ns}name")."""
    return f"{namespace}}}{name}"


class TextTarget:
    """A parser target that keeps character data in order; subclasses decide what counts and where
    breaks go. `limit`: characters kept at most (beyond: the file's text budget is spent)."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit

    def add(self, text: str) -> None:
        self.size += len(text)
        if self.size > self.limit:
            raise LimitReached("more than documents.max_text_chars characters of text", fatal=True)
        self.parts.append(text)

    def text(self) -> str:
        return "".join(self.parts)

    # the parser's callbacks (see `parse`)
    def start(self, tag: str, attrib: dict[str, str]) -> None:
        pass

    def end(self, tag: str) -> None:
        pass

    def data(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class AllText(TextTarget):
    """Every piece of character data, a line break after each element (data-oriented XML)."""

    def end(self, tag: str) -> None:
        if self.parts and not self.parts[-1].endswith("\n"):
            self.add("\n")

    def data(self, text: str) -> None:
        if text.strip():
            self.add(text)


def defused_expat(namespaces: bool = True) -> Any:
    """An expat parser that refuses what defusedxml refuses: a document type declaration (so no
    entity can be declared: no billion laughs, no quadratic blow-up), any entity declaration, any
    external entity (nothing is ever fetched). Names are "ns}local" with `namespaces`."""
    expat = ParserCreate(None, "}") if namespaces else ParserCreate()
    expat.StartDoctypeDeclHandler = _refuse_doctype
    expat.EntityDeclHandler = _refuse_entity
    expat.UnparsedEntityDeclHandler = _refuse_unparsed_entity
    expat.ExternalEntityRefHandler = _refuse_external
    return expat


def _refuse_doctype(name: str, system: str | None, public: str | None, internal: bool) -> None:
    raise DTDForbidden(name, system, public)


def _refuse_entity(name: str, is_parameter: bool, value: str | None, base: Any, system: Any, public: Any,
                   notation: Any) -> None:  # fmt: skip
    raise EntitiesForbidden(name, value, base, system, public, notation)


def _refuse_unparsed_entity(name: str, base: Any, system: Any, public: Any, notation: Any) -> None:
    raise EntitiesForbidden(name, None, base, system, public, notation)


def _refuse_external(context: str, base: Any, system: Any, public: Any) -> int:
    raise ExternalReferenceForbidden(context, base, system, public)


def feed(expat: Any, data: bytes) -> None:
    """`data` through `expat` a slice at a time; malformed XML raises ParseError (as ElementTree
    reports it), a refused declaration a DefusedXmlException (raised by the handlers above)."""
    view = memoryview(data)
    try:
        if len(data) <= FEED:  # most parts: one call (a last empty one cost a small part half its time)
            expat.Parse(data, True)
            return
        for start in range(0, len(data), FEED):
            expat.Parse(bytes(view[start : start + FEED]), False)
        expat.Parse(b"", True)
    except ExpatError as exc:
        raise ParseError(f"{ErrorString(exc.code)}: line {exc.lineno}, column {exc.offset}") from None


def parse(data: bytes, target: TextTarget) -> TextTarget:
    """Feed `data` to a defused expat parser (no DTD, no entities, nothing external) whose handlers
    are the target's start/end/data (names "ns}local", attributes a dict)."""
    expat = defused_expat()
    expat.StartElementHandler = target.start
    expat.EndElementHandler = target.end
    expat.CharacterDataHandler = target.data
    feed(expat, data)
    return target


def xml_text(data: bytes, limit: int) -> str:
    """The character data of any XML document, a line per element."""
    return parse(data, AllText(limit)).text()
