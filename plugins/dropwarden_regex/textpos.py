"""Characters and newlines counted over a range of a view: in C where the extension was built, else Python."""

from __future__ import annotations

from typing import Any


def _utf8_char_count(data: bytes, start: int, end: int) -> int:
    """The characters of `data[start:end]`, a range of whole characters of valid UTF-8."""
    return len(data[start:end].decode("utf-8", "surrogatepass"))


def _newline_count(text: Any, start: int, end: int) -> int:
    """`text.count("\\n", start, end)`: a str, bytes, bytearray, or anything with a str-like `count`."""
    return text.count(b"\n" if isinstance(text, bytes | bytearray) else "\n", start, end)


try:  # built by `pip install` where a C compiler is present (an optional extension: see setup.py)
    from dropwarden_regex._textpos import newline_count as _c_newline_count
    from dropwarden_regex._textpos import utf8_char_count as _c_utf8_char_count

    ACCELERATED = True

    def utf8_char_count(data: bytes, start: int, end: int) -> int:
        """The characters of `data[start:end]`, counted in C for bytes (any other buffer in Python)."""
        if type(data) is bytes:
            return _c_utf8_char_count(data, start, end)
        return _utf8_char_count(data, start, end)

    def newline_count(text: Any, start: int, end: int) -> int:
        """`text.count("\\n", start, end)`, counted in C for a str or bytes."""
        if type(text) is str or type(text) is bytes:
            return _c_newline_count(text, start, end)
        return _newline_count(text, start, end)

except ImportError:  # pragma: no cover - exercised where no compiler built the extension
    ACCELERATED = False
    utf8_char_count = _utf8_char_count
    newline_count = _newline_count
