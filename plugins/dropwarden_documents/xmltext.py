"""Streaming, defused XML reading: a part's text through callbacks in document order, bounded in memory."""

from __future__ import annotations

from defusedxml.ElementTree import DefusedXMLParser

from dropwarden_documents.walk import LimitReached

FEED = 1024 * 1024  # bytes handed to the parser at a time


def local(tag: str) -> str:
    """An element's name without its namespace ("{...}t" -> "t")."""
    return tag.rpartition("}")[2]


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

    # the parser's callbacks (xml.etree.ElementTree.XMLParser target protocol)
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


def parse(data: bytes, target: TextTarget) -> TextTarget:
    """Feed `data` to a defused parser (no DTD, no entities, nothing external) a slice at a time."""
    parser = DefusedXMLParser(target=target, forbid_dtd=True)
    view = memoryview(data)
    for start in range(0, len(data), FEED):
        parser.feed(bytes(view[start : start + FEED]))
    parser.close()
    return target


def xml_text(data: bytes, limit: int) -> str:
    """The character data of any XML document, a line per element."""
    return parse(data, AllText(limit)).text()
