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


def is_xml(data: bytes) -> bool:
    return _XML_HEAD.match(data[:1024]) is not None


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
        text = xml_text(data, limit)
    except (ParseError, DefusedXmlException):  # a DTD, an entity, damage: judged as the text it is
        walker.leaf_text(data, within)
        return
    walker.text(text, (*within, "(xml text)"))
