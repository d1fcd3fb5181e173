"""Clean a manga panel's textured background (screentone, hatching, speed lines) before the page-wide pass.

Tesseract's layout analysis spends most of its time on a textured panel taking the texture for text (and
reads worse for it). Where the page has speech bubbles or caption boxes (`vertical.find_bubbles`: pure
white areas, whose text is dark on white) and the rest of the page is textured — dark pixels in nearly
every small tile, which a document's margins and line gaps never give — the rest is opened
(grey-level morphology): dark strokes thinner than a few pixels (the texture) go, large dark shapes
stay. The bubbles' interiors are kept as they are. A page without bubbles, or whose background is not
textured, is left alone.
"""

from __future__ import annotations

from PIL import Image, ImageChops, ImageFilter

from dropwarden_ocr.vertical import Block, page_mask

_DARK = 170  # a pixel darker than this is ink (texture or text)
_TILE = 16  # pixels: the side of the tiles the texture test counts
_TEXTURED = 0.85  # share of the tiles outside the bubbles holding ink, for the background to be textured
_OPENING = 5  # the opening's window: dark strokes thinner than about this many pixels go


def textured_outside(grey: Image.Image, inside: Image.Image) -> bool:
    """Whether the page outside `inside` (255 = a bubble's interior) is textured: ink in nearly all of
    its tiles."""
    ink = grey.point(lambda v: 255 if v < _DARK else 0)
    tiles = (max(1, grey.width // _TILE), max(1, grey.height // _TILE))
    has_ink = ink.resize(tiles, Image.Resampling.BOX).point(lambda v: 255 if v > 0 else 0)
    outside = inside.resize(tiles, Image.Resampling.BOX).point(lambda v: 255 if v < 64 else 0)
    total = outside.histogram()[255]
    if total < 0.2 * tiles[0] * tiles[1]:
        return False  # bubbles fill the page: nothing to clean
    inked = ImageChops.multiply(has_ink, outside).histogram()[255]
    return inked >= _TEXTURED * total


def cleaned(image: Image.Image, bubbles: list[Block]) -> Image.Image | None:
    """The page with its textured background opened and the bubbles' interiors kept, or None where
    there is nothing to clean (no bubbles, or an untextured background)."""
    if not bubbles:
        return None
    grey = image if image.mode == "L" else image.convert("L")
    inside = Image.new("L", grey.size, 0)
    for block in bubbles:
        if block.mask is not None:
            inside.paste(255, block.mask_box[:2], page_mask(block, erode=False))
    if not textured_outside(grey, inside):
        return None
    opened = grey.filter(ImageFilter.MaxFilter(_OPENING)).filter(ImageFilter.MinFilter(_OPENING))
    return Image.composite(grey, opened, inside)
