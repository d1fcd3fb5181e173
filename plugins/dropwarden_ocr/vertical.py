"""Second reads for vertical text: speech bubbles and vertical blocks found on a page, each cut out,
cleaned (what lies outside the bubble whitened, binarised, small text upscaled) and read alone as one
vertical block (Tesseract `--psm 5`), where the page-wide layout pass splits or misses them.

The bubble detector is cheap and needs only Pillow: on a box-reduced copy of the page, the pure white
areas are flood-filled one by one; a bubble is a white area of moderate size that fills most of its
bounding box (an ellipse fills ~0.79 of it). A page with a white background is one area too large to be
a bubble, so plain documents give none.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

from dropwarden_ocr.engine import BBox

_WORK_SIDE = 320  # the reduced copy's longer side
_WHITE = 252  # a reduced pixel at least this bright is bubble interior (paper tone is darker)
_MAX_AREAS = 40  # white areas looked at per page (bounds the work on a page of many small ones)
_MIN_FILL = 0.5  # share of its bounding box a bubble's interior fills
_MIN_SHARE, _MAX_SHARE = 0.004, 0.45  # a bubble's box as a share of the page
_TARGET_SIDE = 260  # the shorter side a cut-out is upscaled to (small text read better larger), at most x3
_INK = 150  # binarisation threshold of a cut-out
_SMALL_BLOCK = 70  # a block narrower than this (page pixels) holds small text: the composite is doubled
_MAX_UPSCALED = 6_000_000  # pixels: never double a composite past this


@dataclass(frozen=True)
class Block:
    """A part of the page to read on its own: its box (page pixels) and whether it is a bubble
    (then pixels outside `mask`, the bubble's interior at the reduced scale, are whitened)."""

    box: BBox
    mask: Image.Image | None = None
    mask_box: BBox = (0, 0, 0, 0)  # the box of `mask` in page pixels
    tall: bool = True  # a bubble of vertical text; else a wide box (a caption: horizontal lines)


def find_bubbles(image: Image.Image, limit: int = 8) -> list[Block]:
    """Speech bubbles and caption boxes: moderate, well-filled pure white areas, tallest first, at most
    `limit`; `tall` tells a bubble (at least about as tall as wide) from a caption box."""
    grey = image if image.mode == "L" else image.convert("L")
    factor = max(1.0, max(grey.size) / _WORK_SIDE)
    small_size = (max(1, round(grey.width / factor)), max(1, round(grey.height / factor)))
    small = grey.resize(small_size, Image.Resampling.BOX)
    # closing: thin dark strokes (a column of text running to the border) do not split a bubble
    white = small.point(lambda v: 255 if v >= _WHITE else 0)
    mask = white.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.MinFilter(3))
    page_area = small_size[0] * small_size[1]
    found: list[tuple[float, Block]] = []
    for _ in range(_MAX_AREAS):
        seed = _first_white(mask)
        if seed is None:
            break
        ImageDraw.floodfill(mask, seed, 128)
        area_mask = mask.point(lambda v: 255 if v == 128 else 0)
        box = area_mask.getbbox()
        area = area_mask.histogram()[255]
        mask.paste(0, mask=area_mask)
        if box is None:
            continue
        box_area = (box[2] - box[0]) * (box[3] - box[1])
        share = box_area / page_area
        tall = box[3] - box[1] >= 0.9 * (box[2] - box[0])
        if not (_MIN_SHARE <= share <= _MAX_SHARE) or area / box_area < _MIN_FILL:
            continue
        interior = _fill_holes(area_mask.crop(box))
        page_box = _scaled(box, factor, grey.size)
        found.append((page_box[3] - page_box[1], Block(page_box, interior, page_box, tall)))
    found.sort(key=lambda item: -item[0])
    return [block for _, block in found[:limit]]


def _first_white(mask: Image.Image) -> tuple[int, int] | None:
    """A pixel of value 255 (the top row of the white pixels' bounding box holds one)."""
    white = mask.point(lambda v: 255 if v == 255 else 0)
    box = white.getbbox()
    if box is None:
        return None
    row = white.crop((box[0], box[1], box[2], box[1] + 1)).tobytes()
    return box[0] + row.index(255), box[1]


def _fill_holes(area: Image.Image) -> Image.Image:
    """The area with its holes (the text inside a bubble) filled: all that the outside does not reach."""
    padded = Image.new("L", (area.width + 2, area.height + 2), 0)
    padded.paste(area, (1, 1))
    ImageDraw.floodfill(padded, (0, 0), 128)
    return padded.crop((1, 1, area.width + 1, area.height + 1)).point(lambda v: 0 if v == 128 else 255)


def _scaled(box: tuple[int, int, int, int], factor: float, size: tuple[int, int]) -> BBox:
    return (
        max(0, int(box[0] * factor)),
        max(0, int(box[1] * factor)),
        min(size[0], int(box[2] * factor + 0.999)),
        min(size[1], int(box[3] * factor + 0.999)),
    )


def cut_out(image: Image.Image, block: Block) -> tuple[Image.Image, float, tuple[int, int]]:
    """The block as a clean, binarised image to read: outside the bubble white, a white margin, small
    text upscaled. Returns it, its scale (cut-out pixels per page pixel) and the page offset of its
    (unscaled) origin, so that a box read in it maps back: page = offset + box / scale."""
    grey = image if image.mode == "L" else image.convert("L")
    margin = 6
    left, top, right, bottom = block.box
    left, top = max(0, left - margin), max(0, top - margin)
    right, bottom = min(grey.width, right + margin), min(grey.height, bottom + margin)
    crop = grey.crop((left, top, right, bottom))
    if block.mask is not None:
        inside = Image.new("L", crop.size, 0)
        mx0, my0 = block.mask_box[:2]
        inside.paste(page_mask(block), (mx0 - left, my0 - top))
        crop = Image.composite(crop, Image.new("L", crop.size, 255), inside)
    binary = crop.point(lambda v: 0 if v < _INK else 255)
    scale = min(3.0, max(1.0, _TARGET_SIDE / max(1, min(binary.size))))
    if scale > 1.05:
        size = (round(binary.width * scale), round(binary.height * scale))
        binary = crop.resize(size, Image.Resampling.LANCZOS).point(lambda v: 0 if v < _INK else 255)
    else:
        scale = 1.0
    framed = Image.new("L", (binary.width + 40, binary.height + 40), 255)
    framed.paste(binary, (20, 20))
    return framed, scale, (left - round(20 / scale), top - round(20 / scale))


def to_page(box: BBox, scale: float, offset: tuple[int, int], size: tuple[int, int]) -> BBox:
    """A box read in a cut-out, in page pixels."""
    return (
        max(0, int(offset[0] + box[0] / scale)),
        max(0, int(offset[1] + box[1] / scale)),
        min(size[0], int(offset[0] + box[2] / scale + 0.999)),
        min(size[1], int(offset[1] + box[3] / scale + 0.999)),
    )


def page_mask(block: Block, *, erode: bool = True) -> Image.Image:
    """The bubble's interior at page scale (255 inside), less the outline's remains (`erode`)."""
    assert block.mask is not None
    mx0, my0, mx1, my1 = block.mask_box
    mask = block.mask.resize((max(1, mx1 - mx0), max(1, my1 - my0)), Image.Resampling.BILINEAR)
    mask = mask.point(lambda v: 255 if v >= 128 else 0)
    # 2 px in from the reduced mask's edge: the bubble's outline stays out, a column's end stays in
    return mask.filter(ImageFilter.MinFilter(5)) if erode else mask


def tall_blocks(layout_blocks: list[BBox], vertical_boxes: list[BBox], limit: int = 8) -> list[Block]:
    """Blocks of the page-wide pass to read again as vertical: taller than wide, holding a line read
    as vertical."""
    chosen: list[Block] = []
    for box in layout_blocks:
        holds_vertical = any(_inside(v, box) for v in vertical_boxes)
        if holds_vertical and box[3] - box[1] >= box[2] - box[0]:
            chosen.append(Block(box))
    return chosen[:limit]


def _inside(inner: BBox, outer: BBox) -> bool:
    cx, cy = (inner[0] + inner[2]) / 2, (inner[1] + inner[3]) / 2
    return outer[0] <= cx <= outer[2] and outer[1] <= cy <= outer[3]


def upscale_for(blocks: list[Block], size: tuple[int, int]) -> float:
    """How much to enlarge the composite: x2 when the narrowest block (a one-column bubble) is narrow
    enough that its text must be small, unless that would make a large page."""
    narrowest = min(b.box[2] - b.box[0] for b in blocks)
    if narrowest < _SMALL_BLOCK and size[0] * size[1] * 4 <= _MAX_UPSCALED:
        return 2.0
    return 1.0


def composite(image: Image.Image, blocks: list[Block], scale: float = 1.0) -> Image.Image:
    """A white page the size of `image` (times `scale`) holding only the blocks, binarised, in place:
    one vertical-block read of it reads every bubble and column, and its boxes need no mapping but
    the scale. A bubble brings only its interior (its outline and the screentone around it stay out)."""
    grey = image if image.mode == "L" else image.convert("L")
    binary = grey.point(lambda v: 0 if v < _INK else 255)
    page = Image.new("L", grey.size, 255)
    for block in blocks:
        if block.mask is not None:
            inside = Image.new("L", grey.size, 0)
            inside.paste(page_mask(block), block.mask_box[:2])
            page.paste(binary, mask=inside)
        else:
            page.paste(binary.crop(block.box), block.box[:2])
    if scale > 1.0:
        size = (round(grey.width * scale), round(grey.height * scale))
        page = page.resize(size, Image.Resampling.LANCZOS).point(lambda v: 0 if v < 128 else 255)
    return page
