"""HTML and XML files as the text they hold: HTML as a reader sees it, XML as its character data."""

from __future__ import annotations

import re
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException

from dropwarden.content import decode_text
from dropwarden_documents.htmltext import html_text
from dropwarden_documents.walk import Walker, Within
from dropwarden_documents.xmltext import xml_text

_HTML_HEAD = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])",
    re.I | re.S,
)
_XML_HEAD = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*<\?xml\s", re.S)


def is_html(data: bytes) -> bool:
    return _HTML_HEAD.match(data[:4096]) is not None


_UTF16_XML_HEADS = ("<?xml".encode("utf-16-le"), "<?xml".encode("utf-16-be"))
_DECLARED = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?\sencoding\s*=\s*[\"']([A-Za-z0-9._-]{1,40})[\"']"
)
_EXPAT_ENCODINGS = frozenset(
    {"utf-8", "utf8", "utf-16", "utf16", "iso-8859-1", "latin-1", "us-ascii", "ascii"}
)


def is_xml(data: bytes) -> bool:
    """An XML declaration first: in UTF-8 (with or without BOM), or in UTF-16 after its BOM."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data[2:12] in _UTF16_XML_HEADS
    return _XML_HEAD.match(data[:1024]) is not None


def as_expat_reads(data: bytes) -> bytes:
    """`data` in an encoding expat reads itself: a declared Shift_JIS, EUC-JP, ... document re-encoded
    to UTF-8 with its declaration saying so (undecodable bytes: left for expat to refuse)."""
    declared = _DECLARED.match(data[:1024])
    if declared is None or declared.group(1).decode().lower() in _EXPAT_ENCODINGS:
        return data
    start, end = declared.span(1)
    try:
        text = data.decode(declared.group(1).decode())
    except (LookupError, ValueError):  # unknown, not a text codec ("rot13"), or failing ("undefined")
        return data
    if not data[:end].isascii():  # so that characters and bytes line up to the declaration's end
        return data
    return (text[:start] + "UTF-8" + text[end:]).encode()


def walk_html(walker: Walker, data: bytes, within: Within, depth: int) -> None:
    """The visible text of an HTML file (no markup, scripts or styles), `within` ... "(html text)"."""
    limit = max(1, walker.limits.max_text_chars - walker.text_chars)
    walker.text(html_text(decode_text(data).text, limit), (*within, "(html text)"))


def walk_xml(walker: Walker, data: bytes, within: Within, depth: int) -> None:
    """The character data of an XML file, parsed defused (no DTD or entities), `within` ... "(xml text)";
    XHTML goes to the HTML reader."""
    if b"http://www.w3.org/1999/xhtml" in data[:4096]:
        walk_html(walker, data, within, depth)
        return
    limit = max(1, walker.limits.max_text_chars - walker.text_chars)
    try:
        text = xml_text(as_expat_reads(data), limit)
    except (ParseError, DefusedXmlException):  # a DTD, an entity, damage: judged as the text it is
        walker.leaf_text(data, within)
        return
    walker.text(text, (*within, "(xml text)"))
