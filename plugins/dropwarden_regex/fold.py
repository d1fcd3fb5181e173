"""Full-width digits read as ASCII: a view's text with ０-９ (and the separators between digits) folded."""

from __future__ import annotations

import re

# bytes: a full-width digit ０-９ is EF BC 90-99 in UTF-8
_FULL_WIDTH_DIGIT = re.compile(rb"\xef\xbc[\x90-\x99]")
_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
# between two digits (after folding): full-width hyphen-minus, the long-vowel mark and the Unicode dashes
# read as '-'; the ideographic space as ' '; full-width parentheses and plus around digits as ASCII
_BETWEEN_DIGITS = re.compile(r"(?<=[0-9])(?:[－ー‐‑‒–—―−]|(\u3000))(?=[0-9])")
_AROUND_DIGITS = re.compile(r"（(?=[0-9])|(?<=[0-9])）|＋(?=[0-9（])")
_AROUND = {"（": "(", "）": ")", "＋": "+"}


# lead bytes EF visited one by one before the rest is left to `_FULL_WIDTH_DIGIT` (text of full-width forms)
_LEADS_VISITED = 64


def has_full_width_digits(utf8: bytes) -> bool:
    """Whether the view's UTF-8 bytes hold a full-width digit.

    `bytes.find` of one byte is memchr, and EF leads only the full-width and half-width forms (and a
    BOM), rare in most text, where the regex compares its first byte at every position; a view with
    many EF bytes is left to the regex after the first few, so it costs no more than the regex alone."""
    find = utf8.find
    at = find(b"\xef")
    for _ in range(_LEADS_VISITED):
        if at < 0:
            return False
        if utf8[at + 1 : at + 2] == b"\xbc" and b"\x90" <= utf8[at + 2 : at + 3] <= b"\x99":
            return True
        at = find(b"\xef", at + 1)
    return at >= 0 and _FULL_WIDTH_DIGIT.search(utf8, at) is not None


def fold_digits(text: str) -> str:
    """`text` with full-width digits as ASCII digits, and dashes, ideographic spaces, parentheses and
    plus signs around them as their ASCII forms (０９０ー１２３４ー５６７８ → 090-1234-5678).

    One character always becomes one character, so every character offset in the folded text is the
    same offset in `text`: a match in it is reported where it stands in the original."""
    folded = text.translate(_DIGITS)
    folded = _BETWEEN_DIGITS.sub(lambda m: " " if m.group(1) else "-", folded)
    return _AROUND_DIGITS.sub(lambda m: _AROUND[m.group()], folded)
