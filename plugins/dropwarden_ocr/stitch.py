"""Rejoin horizontal lines the layout analysis cut in two (a caption's address read as two blocks).

Tesseract's page layout at times puts the two halves of one printed line into different blocks
("Mail: taro" and "@example.com" side by side): each half is a line of its own, and a value spanning
them matches in neither. Two horizontal lines of about the same height, on the same baseline band,
the second starting where the first ends (a gap narrower than a character), are one line.
"""

from __future__ import annotations

import unicodedata

from dropwarden.findings import bbox_union
from dropwarden_ocr.engine import OcrRegion

_MAX_GAP = 0.6  # of the line's height: wider gaps are columns or table cells apart
_MIN_OVERLAP = 0.6  # of the lower line's height, the two lines' vertical overlap
_MAX_HEIGHT_RATIO = 1.4
_SPACE_GAP = 0.2  # as tesseract.py: a gap wider than this share of the height between Latin words is a space
_MAX_LINES = 400  # bounds the pairwise look on a page of very many lines


def joined(regions: list[OcrRegion]) -> list[OcrRegion]:
    """The regions with every horizontal line cut in two joined again, left half first, in the left
    half's place; vertical lines and lines of other strategies are left as they are."""
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
    left = regions[i]
    if left.vertical or not left.text:
        return None
    _lx0, ly0, lx1, ly1 = left.bbox
    for j, right in enumerate(regions):
        if j == i or right.vertical or right.strategy != left.strategy or not right.text:
            continue
        rx0, ry0, rx1, ry1 = right.bbox
        lh, rh = ly1 - ly0, ry1 - ry0
        if min(lh, rh) <= 0 or max(lh, rh) > _MAX_HEIGHT_RATIO * min(lh, rh):
            continue
        overlap = min(ly1, ry1) - max(ly0, ry0)
        gap = rx0 - lx1
        if overlap >= _MIN_OVERLAP * min(lh, rh) and -0.2 * lh <= gap <= _MAX_GAP * lh and rx1 > lx1:
            return j
    return None


def _join(left: OcrRegion, right: OcrRegion) -> OcrRegion:
    height = min(left.bbox[3] - left.bbox[1], right.bbox[3] - right.bbox[1])
    gap = right.bbox[0] - left.bbox[2]
    space = narrow(left.text[-1]) and narrow(right.text[0]) and gap > _SPACE_GAP * height
    text = left.text + (" " if space else "") + right.text
    shift = len(text) - len(right.text)
    left_parts = left.parts or ((0, len(left.text), left.bbox),)
    right_parts = right.parts or ((0, len(right.text), right.bbox),)
    parts = left_parts + tuple((a + shift, b + shift, box) for a, b, box in right_parts)
    confidence = None
    if left.confidence is not None and right.confidence is not None:
        weight = len(left.text) + len(right.text)
        confidence = (left.confidence * len(left.text) + right.confidence * len(right.text)) / weight
    return OcrRegion(text, bbox_union([left.bbox, right.bbox]), confidence, False, parts, left.strategy)


def narrow(ch: str) -> bool:
    """A Latin letter, digit or sign (not a wide CJK character)."""
    folded = unicodedata.normalize("NFKC", ch)[:1] or ch
    return unicodedata.east_asian_width(folded) not in ("W", "F")
