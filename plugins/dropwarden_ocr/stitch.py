"""Rejoin lines the layout analysis cut in two (a caption's address, a column's last digits).

Tesseract's page layout at times puts the two halves of one printed line into different blocks
("Mail: taro" and "@example.com" side by side; "個人番号1290 4592" and "1525" one below the other in a
column): each half is a line of its own, and a value spanning them matches in neither. Two horizontal
lines of about the same height on the same band, or two vertical lines in the same column, the second
starting where the first ends (a gap narrower than a character), are one line.
"""

from __future__ import annotations

import unicodedata

from dropwarden.findings import bbox_union
from dropwarden_ocr.engine import BBox, OcrRegion

_MAX_GAP = 0.6  # of the line's height: wider gaps are columns or table cells apart
_MAX_GAP_VERTICAL = 0.8  # of a column's width: along a column, a gap a little narrower than a character
_MIN_OVERLAP = 0.6  # of the lower line's height, the two lines' vertical overlap
_MAX_HEIGHT_RATIO = 1.4
_SPACE_GAP = 0.2  # as tesseract.py: a gap wider than this share of the height between Latin words is a space
_MAX_LINES = 400  # bounds the pairwise look on a page of very many lines


def joined(regions: list[OcrRegion]) -> list[OcrRegion]:
    """The regions with every line cut in two joined again (horizontal with horizontal, vertical with
    vertical, of one strategy), the first half's text first, in the first half's place."""
    out = list(regions)
    if len(out) > _MAX_LINES:
        return out
    merged = True
    while merged:
        merged = False
        for i, left in enumerate(out):
            j = _right_half(out, i)
            if j is not None:
                out[i] = _join(left, out[j])
                del out[j]
                merged = True
                break
    return out


def _right_half(regions: list[OcrRegion], i: int) -> int | None:
    """The line that continues line `i`: to its right (a horizontal one) or below it (a vertical one)."""
    first = regions[i]
    if not first.text:
        return None
    for j, second in enumerate(regions):
        if (
            j == i
            or second.vertical != first.vertical
            or second.strategy != first.strategy
            or not second.text
        ):
            continue
        if _continues(first.bbox, second.bbox, first.vertical):
            return j
    return None


def _continues(first: BBox, second: BBox, vertical: bool) -> bool:
    """Whether `second` goes on where `first` ends: horizontal lines of about one height on one band,
    or vertical lines in one column (a column's digits are narrower than its kanji: no width ratio)."""
    if vertical:  # transposed: x is across the column, y along it
        first, second = (first[1], first[0], first[3], first[2]), (second[1], second[0], second[3], second[2])
    across = (first[3] - first[1], second[3] - second[1])
    if min(across) <= 0 or (not vertical and max(across) > _MAX_HEIGHT_RATIO * min(across)):
        return False
    overlap = min(first[3], second[3]) - max(first[1], second[1])
    gap = second[0] - first[2]
    reach = _MAX_GAP_VERTICAL * max(across) if vertical else _MAX_GAP * across[0]
    return overlap >= _MIN_OVERLAP * min(across) and -0.2 * across[0] <= gap <= reach and second[2] > first[2]


def _join(left: OcrRegion, right: OcrRegion) -> OcrRegion:
    vertical = left.vertical
    if vertical:
        thickness = max(left.bbox[2] - left.bbox[0], right.bbox[2] - right.bbox[0])
        gap = right.bbox[1] - left.bbox[3]
    else:
        thickness = min(left.bbox[3] - left.bbox[1], right.bbox[3] - right.bbox[1])
        gap = right.bbox[0] - left.bbox[2]
    space = narrow(left.text[-1]) and narrow(right.text[0]) and gap > _SPACE_GAP * thickness
    text = left.text + (" " if space else "") + right.text
    shift = len(text) - len(right.text)
    left_parts = left.parts or ((0, len(left.text), left.bbox),)
    right_parts = right.parts or ((0, len(right.text), right.bbox),)
    parts = left_parts + tuple((a + shift, b + shift, box) for a, b, box in right_parts)
    confidence = None
    if left.confidence is not None and right.confidence is not None:
        weight = len(left.text) + len(right.text)
        confidence = (left.confidence * len(left.text) + right.confidence * len(right.text)) / weight
    return OcrRegion(text, bbox_union([left.bbox, right.bbox]), confidence, vertical, parts, left.strategy)


def narrow(ch: str) -> bool:
    """A Latin letter, digit or sign (not a wide CJK character)."""
    folded = unicodedata.normalize("NFKC", ch)[:1] or ch
    return unicodedata.east_asian_width(folded) not in ("W", "F")
