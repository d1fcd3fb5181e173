"""Redacted excerpts and keyed fingerprints: how a finding names a value without revealing it."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

_CONTEXT_CHARS = 16
_MASK = "*" * 6
_DIGIT = re.compile(r"\d")  # any decimal digit: ASCII, full-width, and every other script's
_ASCII_DIGIT = re.compile(r"[0-9]")
_SEPARATORS = re.compile(r"[\s\-‐‑‒–—―ー.()]")


class Fingerprinter:
    """HMAC-SHA256 of (type, normalised value) under a per-install key, truncated to 128 bits."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("fingerprint key must be at least 16 bytes")
        self._key = key
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)  # copied per value: keyed once, not per call

    def __call__(self, finding_type: str, value: str | bytes) -> str:
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        normalised = normalise_value(value)
        message = f"{finding_type}\x00{normalised}".encode()
        keyed = self._keyed.copy()
        keyed.update(message)
        return keyed.hexdigest()[:32]


def normalise_value(value: str) -> str:
    """Fold width and drop separators so "0901234-5678" and "０９０ １２３４ ５６７８" correlate."""
    if value.isascii():  # NFKC leaves ASCII as it is; a regex finds a digit faster than a generator
        folded = value.strip().lower()
        has_digit = _ASCII_DIGIT.search(folded) is not None
    else:
        folded = unicodedata.normalize("NFKC", value).strip().lower()
        has_digit = any(c.isdigit() for c in folded)
    return _SEPARATORS.sub("", folded) if has_digit else folded


def mask_value(value: str, tail: bool = True) -> str:
    """A fixed-width mask that keeps at most the last 2 characters (4 for values of 16+ characters);
    none with `tail` False (values that end in a password, whose last characters are its own).

    The mask width does not depend on the value's length, and the visible tail is too short to
    reconstruct any value the rule packs detect (a card shows at most its last four digits).
    """
    value = value.strip()
    keep = 0 if not tail else 4 if len(value) >= 16 else 2 if len(value) >= 8 else 0
    return _MASK + (value[-keep:] if keep else "")


def excerpt(text: str, start: int, end: int, context: int = _CONTEXT_CHARS, tail: bool = True) -> str:
    """Surrounding context with the value masked; digits in the context are masked too, since
    a neighbouring value (another number on the same line) may be sensitive as well."""
    before = text[max(0, start - context) : start]
    after = text[end : end + context]
    before = _DIGIT.sub("#", _one_line(before))
    after = _DIGIT.sub("#", _one_line(after))
    masked = _one_line(mask_value(text[start:end], tail))  # the kept tail may hold a newline
    return f"{before}[{masked}]{after}"


_CONTROLS_TO_SPACE = {code: " " for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def _one_line(fragment: str) -> str:
    """Control characters (line breaks included) become spaces, so an excerpt is one line."""
    return fragment.translate(_CONTROLS_TO_SPACE)
