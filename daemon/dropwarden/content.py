"""Plugin API for extractors that open containers: type, decode and pull strings from the bytes found."""

from dropwarden.judge.sniff import FileType, looks_like_text, sniff
from dropwarden.judge.textdecode import DecodeError, decode_text
from dropwarden.judge.trailing import printable_strings, utf16le_strings

__all__ = [
    "DecodeError",
    "FileType",
    "decode_text",
    "looks_like_text",
    "printable_strings",
    "sniff",
    "utf16le_strings",
]
