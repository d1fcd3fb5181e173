"""The bytes after an image's end as a text view, judged by every text rule like any text file.

A card number appended to a clean PNG is never decoded by OCR or seen by a vision model; the core cuts
an image file at its end (`dropwarden.judge.framing`) and gives the rest to the text rules: decoded as text
when it is text, else the printable strings in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dropwarden.judge.sniff import looks_like_text
from dropwarden.judge.textdecode import DecodeError, decode_text
from dropwarden.views import TextView

VIEW_NAME = "trailing"
_MIN_STRING = 4
# Runs of printable ASCII (tab included) and well-formed UTF-8 sequences: `strings`, UTF-8 aware.
_STRINGS = re.compile(
    rb"(?:[\t\x20-\x7e]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}){%d,}" % _MIN_STRING
)


@dataclass(frozen=True)
class Trailing:
    """The bytes after an image's end as a text view, and whether only the first `limit` were read."""

    view: TextView
    size: int  # bytes after the end
    read: int  # bytes of them in the view (at most the limit)


def trailing_view(data: bytes, end: int, limit: int) -> Trailing | None:
    """A text view of `data[end:]` (its first `limit` bytes): decoded text when it is text, else the
    printable strings in it, one per line. None when nothing follows the image."""
    size = len(data) - end
    if size <= 0:
        return None
    tail = data[end : end + limit]
    text, how = as_text(tail)
    provenance = {"source": "file", "part": "trailing", "offset": end, "bytes": size, "read_as": how}
    return Trailing(TextView(VIEW_NAME, text, how, provenance), size, len(tail))


def as_text(data: bytes) -> tuple[str, str]:
    """(text, encoding) when `data` is text in an encoding we can identify, else (its printable
    strings joined by newlines, "strings")."""
    if looks_like_text(data[:8192]):
        try:
            decoded = decode_text(data)
        except DecodeError:
            pass
        else:
            return decoded.text, decoded.encoding
    return printable_strings(data), "strings"


_UTF16LE_STRINGS = re.compile(rb"(?:[\t\x20-\x7e]\x00){%d,}" % _MIN_STRING)


def utf16le_strings(data: bytes) -> str:
    """The runs of at least 4 printable ASCII characters stored as UTF-16LE in `data` (at either byte
    alignment), one per line."""
    return "\n".join(run.decode("utf-16-le") for run in _UTF16LE_STRINGS.findall(data))


def printable_strings(data: bytes) -> str:
    """The runs of at least 4 printable ASCII or UTF-8 characters in `data`, one per line."""
    return "\n".join(run.decode("utf-8", "replace") for run in _STRINGS.findall(data))
