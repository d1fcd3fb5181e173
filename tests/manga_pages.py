"""Harder rendered pages for OCR: manga panels (vertical speech bubbles on screentone or line-textured grey),
pages mixing vertical bubbles with horizontal captions, and rotated, blurred, JPEG-damaged scans.

Vertical bubbles set their text top to bottom, right to left, digits and hyphens upright one per cell
(`電話090-4502-5922` as one column), the bubble only a little larger than its longest column, so columns
run to its border. Each seeded value's box is where it was drawn, in pixels of the final image.
"""

from __future__ import annotations

import io
import math
import random

from PIL import Image, ImageDraw, ImageFilter

from tests.ocr_pages import (
    Page,
    Seeded,
    Segment,
    _font,
    card,
    email,
    full_width,
    generated_page,
    jp_phone,
    my_number,
)

_TTB = {"direction": "ttb", "features": ["vert"]}
_BUBBLE_FILLER = [
    "本当にそうなの",
    "ちょっと待って",
    "今日は無理だよ",
    "明日また会おう",
    "信じられない",
    "早く行こう",
]
# Numbers in bubbles that are not PII: dates, prices, chapter and order numbers
_BUBBLE_DECOYS = [
    "五月十七日",
    "第12話",
    "2024年5月17日",
    "¥12,800です",
    "注文番号20240517",
    "部屋は305号室",
    "内線1234",
]
_CAPTION_DECOYS = ["Order 20240517-0012", "2024-05-17 10:30", "Total $1,280.00", "Room 305 ext. 1234"]


def panel(
    columns: list[list[Segment]],
    *,
    size: int = 26,
    style: str = "dots",
    panel_size: tuple[int, int] = (560, 760),
) -> Page:
    """One vertical bubble holding `columns`, centred on a panel textured in `style` ("dots", "hatch",
    "lines", "speed")."""
    image = _background(random.Random(7), panel_size, style)
    seeded = _bubble(image, (panel_size[0] // 2, panel_size[1] // 2), columns, size, "sans")
    return Page(image, "manga", seeded)  # type: ignore[arg-type]


def caption_panel(
    line: list[Segment], *, style: str = "dots", panel_size: tuple[int, int] = (660, 420)
) -> Page:
    """One horizontal caption box holding `line`, near the bottom of a panel textured in `style`."""
    image = _background(random.Random(7), panel_size, style)
    seeded = _caption(image, (40, panel_size[1] - 90), line, 20)
    return Page(image, "mixed", seeded)  # type: ignore[arg-type]


def _background(rnd: random.Random, size: tuple[int, int], style: str | None = None) -> Image.Image:
    """A grey panel: a dot screentone, diagonal or horizontal hatching, or speed lines."""
    width, height = size
    image = Image.new("L", size, rnd.randint(225, 250))
    draw = ImageDraw.Draw(image)
    style = style or rnd.choice(["dots", "hatch", "lines", "speed"])
    ink = rnd.randint(40, 140)
    step = rnd.randint(4, 7)
    if style == "dots":
        radius = rnd.uniform(0.8, 1.8)
        for y in range(0, height, step):
            shift = step // 2 if (y // step) % 2 else 0
            for x in range(shift, width, step):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=ink)
    elif style == "hatch":
        for k in range(-height, width, step):
            draw.line((k, 0, k + height, height), fill=ink, width=1)
    elif style == "lines":
        for y in range(0, height, step):
            draw.line((0, y, width, y), fill=ink, width=rnd.choice([1, 2]))
    else:
        cx, cy = rnd.randint(0, width), rnd.randint(0, height)
        for angle in range(0, 360, 3):
            a = math.radians(angle + rnd.uniform(0, 2))
            draw.line(
                (cx, cy, cx + 2 * width * math.cos(a), cy + 2 * height * math.sin(a)), fill=ink, width=2
            )
    return image


def _column(text: list[Segment], size: int) -> float:
    font = _font(size)
    return sum(font.getlength(s.text, **_TTB) for s in text)


def _bubble(
    image: Image.Image, centre: tuple[int, int], columns: list[list[Segment]], size: int, face: str
) -> list[Seeded]:
    """A white elliptical bubble with a black outline around `columns` set vertically; the ellipse is
    just large enough that the longest column reaches its border."""
    draw = ImageDraw.Draw(image)
    font = _font(size, face)
    step = round(size * 1.5)
    longest = max(_column(c, size) for c in columns)
    text_w = len(columns) * step
    # the ellipse just reaches the ends of the longest column (at its outer edge): they touch the border
    half_w = text_w / 2 * 1.5 + size * 0.4
    reach = min(0.9, (text_w / 2) / half_w)
    half_h = (longest / 2 + size * 0.15) / math.sqrt(1 - reach * reach)
    cx, cy = centre
    draw.ellipse((cx - half_w, cy - half_h, cx + half_w, cy + half_h), fill=255, outline=0, width=3)
    seeded: list[Seeded] = []
    x = cx + text_w / 2 - step / 2
    for column in columns:
        y = cy - _column(column, size) / 2
        for segment in column:
            draw.text((x, y), segment.text, font=font, fill=0, anchor="mt", **_TTB)
            if segment.kind:
                box = draw.textbbox((x, y), segment.text, font=font, anchor="mt", **_TTB)
                seeded.append(Seeded(segment.kind, segment.text, tuple(round(v) for v in box)))
            y += font.getlength(segment.text, **_TTB)
        x -= step
    return seeded


def _caption(image: Image.Image, origin: tuple[int, int], line: list[Segment], size: int) -> list[Seeded]:
    """A white rectangular narration box with one horizontal line."""
    draw = ImageDraw.Draw(image)
    font = _font(size)
    width = sum(font.getlength(s.text) for s in line)
    x, y = origin
    pad = size // 2
    draw.rectangle((x - pad, y - pad, x + width + pad, y + size * 1.4 + pad), fill=255, outline=0, width=2)
    seeded = []
    for segment in line:
        draw.text((x, y), segment.text, font=font, fill=0)
        if segment.kind:
            box = draw.textbbox((x, y), segment.text, font=font)
            seeded.append(Seeded(segment.kind, segment.text, tuple(round(v) for v in box)))
        x += font.getlength(segment.text)
    return seeded


def _vertical_value(kind: str, rnd: random.Random) -> list[Segment]:
    """A seeded value as a bubble column: label and value, digits upright (ASCII or full-width)."""
    wide = rnd.random() < 0.4
    if kind == "PHONE":
        label, value = rnd.choice(["電話", "携帯", "番号は", "TEL"]), jp_phone(rnd)
    elif kind == "JP_MY_NUMBER":
        label, value = rnd.choice(["マイナンバー", "個人番号"]), my_number(rnd, "")
    else:
        label, value = rnd.choice(["カード番号", "カード"]), card(rnd, rnd.choice(["-", ""]))
    return [Segment(label), Segment(full_width(value) if wide else value, kind)]


def manga_panel(rnd: random.Random, kinds: list[str], *, mixed: bool = False) -> Page:
    """A panel on a textured grey background with one or two vertical bubbles; `kinds` seeded (PHONE,
    JP_MY_NUMBER, CREDIT_CARD in bubbles; EMAIL, and on `mixed` panels one more value, in a horizontal
    caption box). With no kinds, the bubbles and caption carry decoy numbers."""
    width, height = rnd.randint(620, 820), rnd.randint(760, 980)
    image = _background(rnd, (width, height))
    face = rnd.choice(["sans", "sans-bold", "serif-bold"])
    seeded: list[Seeded] = []
    bubble_kinds = [k for k in kinds if k != "EMAIL"]
    caption_kinds = [k for k in kinds if k == "EMAIL"]
    if mixed and not caption_kinds and len(bubble_kinds) > 1:
        caption_kinds.append(bubble_kinds.pop())
    bubbles: list[list[list[Segment]]] = []
    for kind in bubble_kinds:
        columns = [_vertical_value(kind, rnd)]
        if rnd.random() < 0.6:
            columns.append([Segment(rnd.choice(_BUBBLE_FILLER))])
        bubbles.append(columns)
    if not kinds:
        bubbles = [
            [[Segment(rnd.choice(_BUBBLE_DECOYS))], [Segment(rnd.choice(_BUBBLE_FILLER))]] for _ in range(2)
        ]
    elif not bubbles:
        bubbles = [[[Segment(rnd.choice(_BUBBLE_FILLER))]]]
    slots = len(bubbles)
    for index, columns in enumerate(bubbles):
        longest = max(len("".join(s.text for s in c)) for c in columns)
        size = max(15, min(rnd.randint(18, 30), int((height - 140) / (longest * 1.1))))
        cx = round(width * (index + 0.5) / slots) + rnd.randint(-20, 20)
        cy = height // 2 + rnd.randint(-60, 60) - (80 if caption_kinds or mixed else 0)
        seeded += _bubble(image, (cx, cy), columns, size, face)
    lines = [_caption_line(kind, rnd) for kind in caption_kinds]
    if mixed and not kinds:
        lines = [[Segment(rnd.choice(_CAPTION_DECOYS))]]
    y = height - 60 - 50 * len(lines)
    for line in lines:
        seeded += _caption(image, (rnd.randint(20, 60), y), line, rnd.randint(16, 22))
        y += 50
    return Page(image, "mixed" if mixed else "manga", seeded)  # type: ignore[arg-type]


def _caption_line(kind: str, rnd: random.Random) -> list[Segment]:
    if kind == "EMAIL":
        return [Segment(rnd.choice(["Mail: ", "連絡先 "])), Segment(email(rnd), kind)]
    if kind == "PHONE":
        return [Segment("電話 "), Segment(jp_phone(rnd), kind)]
    if kind == "JP_MY_NUMBER":
        return [Segment("個人番号 "), Segment(my_number(rnd, " "), kind)]
    return [Segment("カード "), Segment(card(rnd, " "), kind)]


def scan(rnd: random.Random, kinds: list[str]) -> Page:
    """A document page (horizontal or vertical Japanese, or English) set small, turned by a few degrees,
    blurred, with sensor noise and heavy JPEG compression, as a phone photo or a cheap scan gives."""
    orientation = rnd.choice(["horizontal", "vertical", "english"])
    page = generated_page(rnd, orientation, kinds, size=rnd.randint(17, 22))  # type: ignore[arg-type]
    angle = rnd.uniform(1.0, 3.0) * rnd.choice([-1, 1])
    image = page.image
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    seeded = [
        Seeded(s.kind, s.value, _rotated_box(s.box, image.size, rotated.size, angle)) for s in page.seeded
    ]
    rotated = rotated.filter(ImageFilter.GaussianBlur(rnd.uniform(0.4, 0.9)))
    noise = Image.effect_noise(rotated.size, rnd.uniform(6, 14))
    rotated = Image.blend(rotated, noise, 0.12)
    out = io.BytesIO()
    rotated.save(out, format="JPEG", quality=rnd.randint(35, 60))
    return Page(Image.open(io.BytesIO(out.getvalue())).convert("L"), "scan", seeded)  # type: ignore[arg-type]


def _rotated_box(
    box: tuple[int, int, int, int], size: tuple[int, int], new_size: tuple[int, int], angle: float
) -> tuple[int, int, int, int]:
    """Where a box lands after Image.rotate(angle, expand=True) (counter-clockwise, about the centre)."""
    a = math.radians(angle)
    cx, cy = size[0] / 2, size[1] / 2
    nx, ny = new_size[0] / 2, new_size[1] / 2
    points = []
    for x, y in ((box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])):
        dx, dy = x - cx, y - cy
        points.append((nx + dx * math.cos(a) + dy * math.sin(a), ny - dx * math.sin(a) + dy * math.cos(a)))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return (math.floor(min(xs)), math.floor(min(ys)), math.ceil(max(xs)), math.ceil(max(ys)))
