"""Rendered test pages for OCR: horizontal and vertical Japanese and English, with seeded PII and where
each seeded value was drawn (its box in image pixels). Used by the OCR tests and bench/ocr_bench.py.

Text is drawn with a real CJK font (Debian fonts-noto-cjk). Vertical columns are laid out by Pillow's
raqm layout (`direction="ttb"`, OpenType `vert` forms), right to left, as Japanese vertical text is.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw, ImageFilter, ImageFont, features

FONT_DIR = Path("/usr/share/fonts/opentype/noto")
FONTS = {
    "sans": FONT_DIR / "NotoSansCJK-Regular.ttc",
    "sans-bold": FONT_DIR / "NotoSansCJK-Bold.ttc",
    "serif": FONT_DIR / "NotoSerifCJK-Regular.ttc",
    "serif-bold": FONT_DIR / "NotoSerifCJK-Bold.ttc",
}
FONT = FONTS["sans"]
KINDS = ("PHONE", "JP_MY_NUMBER", "CREDIT_CARD", "EMAIL")
Orientation = Literal["horizontal", "vertical", "english"]


def fonts_available() -> bool:
    """The CJK font is installed and Pillow can lay out vertical text (libraqm)."""
    return FONT.is_file() and bool(features.check("raqm"))


@dataclass(frozen=True)
class Segment:
    """A piece of a line; `kind` marks a seeded PII value (a finding type), None plain text."""

    text: str
    kind: str | None = None


@dataclass(frozen=True)
class Seeded:
    kind: str
    value: str
    box: tuple[int, int, int, int]


@dataclass
class Page:
    image: Image.Image
    orientation: Orientation
    seeded: list[Seeded] = field(default_factory=list)

    def encode(self, fmt: str = "PNG", **options: object) -> bytes:
        out = io.BytesIO()
        self.image.save(out, format=fmt, **options)
        return out.getvalue()


def _font(size: int, face: str = "sans") -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS[face]), size, index=0)  # index 0: the Japanese (JP) faces


def horizontal(lines: list[list[Segment]], *, size: int = 28, face: str = "sans", margin: int = 24) -> Page:
    """Lines left to right, top to bottom."""
    font = _font(size, face)
    step = round(size * 1.7)
    width = max(round(sum(font.getlength(s.text) for s in line)) for line in lines) + 2 * margin
    height = len(lines) * step + 2 * margin
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    seeded: list[Seeded] = []
    y = margin
    for line in lines:
        x = float(margin)
        for segment in line:
            draw.text((x, y), segment.text, font=font, fill=0)
            if segment.kind:
                box = draw.textbbox((x, y), segment.text, font=font)
                seeded.append(Seeded(segment.kind, segment.text, tuple(round(v) for v in box)))
            x += font.getlength(segment.text)
        y += step
    return Page(image, "horizontal", seeded)


def vertical(columns: list[list[Segment]], *, size: int = 28, face: str = "sans", margin: int = 24) -> Page:
    """Columns top to bottom, right to left (Japanese vertical writing)."""
    font = _font(size, face)
    step = round(size * 1.8)
    ttb = {"direction": "ttb", "features": ["vert"]}

    def length(text: str) -> float:
        return font.getlength(text, **ttb)

    height = max(round(sum(length(s.text) for s in column)) for column in columns) + 2 * margin
    width = len(columns) * step + 2 * margin
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    seeded: list[Seeded] = []
    x = width - margin - step / 2  # the column's centre line
    for column in columns:
        y = float(margin)
        for segment in column:
            draw.text((x, y), segment.text, font=font, fill=0, anchor="mt", **ttb)
            if segment.kind:
                box = draw.textbbox((x, y), segment.text, font=font, anchor="mt", **ttb)
                seeded.append(Seeded(segment.kind, segment.text, tuple(round(v) for v in box)))
            y += length(segment.text)
        x -= step
    return Page(image, "vertical", seeded)


# ----------------------------------------------------------------------------------- seeded values


def luhn_complete(prefix: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(prefix)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return prefix + str((10 - total % 10) % 10)


def my_number_complete(first11: str) -> str:
    digits = [int(c) for c in first11]
    total = sum(d * (n + 1 if n <= 6 else n - 5) for n, d in enumerate(reversed(digits), start=1))
    remainder = total % 11
    return first11 + str(0 if remainder <= 1 else 11 - remainder)


def card(rnd: random.Random, sep: str = " ") -> str:
    prefix = rnd.choice(["4", "4", "51", "53", "55", "3530", "3566"])  # Visa, Mastercard, JCB
    number = luhn_complete(prefix + "".join(rnd.choice("0123456789") for _ in range(15 - len(prefix))))
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def my_number(rnd: random.Random, sep: str = " ") -> str:
    number = my_number_complete(str(rnd.randint(1, 9)) + "".join(rnd.choice("0123456789") for _ in range(10)))
    return sep.join(number[i : i + 4] for i in range(0, 12, 4))


def jp_phone(rnd: random.Random) -> str:
    shape = rnd.choice(["mobile", "mobile", "tokyo", "area"])
    if shape == "mobile":
        return f"0{rnd.choice('789')}0-{rnd.randint(1000, 9999)}-{rnd.randint(1000, 9999)}"
    if shape == "tokyo":
        return f"03-{rnd.randint(1000, 9999)}-{rnd.randint(1000, 9999)}"
    area = rnd.choice(["011", "022", "045", "052", "075", "092"])
    return f"{area}-{rnd.randint(200, 999)}-{rnd.randint(1000, 9999)}"


def nanp_phone(rnd: random.Random) -> str:
    area = f"{rnd.randint(2, 9)}{rnd.randint(0, 8)}{rnd.randint(0, 9)}"  # NANP: N, not 9, and not N11
    exchange = f"{rnd.randint(2, 9)}{rnd.randint(0, 9)}{rnd.randint(0, 9)}"
    if area[1:] == "11" or exchange[1:] == "11":
        return nanp_phone(rnd)
    line = rnd.randint(1000, 9999)
    return rnd.choice(
        [f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}", f"{area}.{exchange}.{line}"]
    )


_NAMES = ["taro", "hanako", "yamada", "suzuki", "kenji", "yuki", "alice", "bob", "sato", "mika"]
_DOMAINS = ["example.co.jp", "example.com", "mail.example.jp", "corp.example.org"]


def email(rnd: random.Random) -> str:
    local = rnd.choice(_NAMES) + rnd.choice([".", "_", ""]) + rnd.choice(_NAMES) + str(rnd.randint(1, 99))
    return f"{local}@{rnd.choice(_DOMAINS)}"


def full_width(text: str) -> str:
    """ASCII digits, letters and punctuation as their full-width forms (as Japanese documents set them)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else ("\u3000" if c == " " else c) for c in text)


# ----------------------------------------------------------------------------------- generated pages

_JA_FILLER = [
    "本日の会議資料を共有します",
    "来週の予定を確認してください",
    "請求書は月末に送付します",
    "配送状況は倉庫で確認中です",
    "担当者が対応しています",
    "予算案を部署で検討しました",
    "新しい計画の概要です",
    "顧客からの注文を受け付けました",
    "報告書の提出期限は金曜日です",
    "詳細は添付の資料をご覧ください",
]
_EN_FILLER = [
    "Please find the meeting notes attached.",
    "The shipment left the warehouse on Monday.",
    "Quarterly revenue is above the forecast.",
    "The review is scheduled for next week.",
    "Our team will confirm the order soon.",
    "See the attached summary for details.",
]
# Numbers that are not PII: dates, amounts, order and postal codes, a non-Luhn 16-digit tracking number,
# a 12-digit number with no My Number context.
_JA_DECOYS = [
    "2024年5月17日 10:30 開始",
    "合計金額 ¥12,800（税込）",
    "注文番号 20240517-0012",
    "100-0001 東京都千代田区",  # with its 〒 a postal code is a (low) JP_POSTAL_CODE
    "追跡番号 1234 5678 9012 3450",
    "管理番号 4820 1375 9902",
    "内線 1234 までどうぞ",
]
_EN_DECOYS = [
    "Invoice 2024-05-17, total $1,280.00",
    "Order no. 20240517-0012 shipped",
    "Tracking 1234 5678 9012 3450",
    "Reference 4820 1375 9902",
    "Room 305, extension 1234",
    "Version 3.12.4 released 2024-05-17",
]


def _ja_item(kind: str, rnd: random.Random, fw_digits: bool, fw_email: bool) -> list[Segment]:
    def digits(text: str) -> str:
        return full_width(text) if fw_digits else text

    if kind == "PHONE":
        label = rnd.choice(["お問い合わせは電話", "電話番号：", "携帯 ", "TEL "])
        return [
            Segment(label),
            Segment(digits(jp_phone(rnd)), kind),
            Segment(rnd.choice(["まで", "", "です"])),
        ]
    if kind == "JP_MY_NUMBER":
        label = rnd.choice(["マイナンバー：", "個人番号 ", "マイナンバー（個人番号）"])
        sep = rnd.choice([" ", ""])
        return [Segment(label), Segment(digits(my_number(rnd, sep)), kind)]
    if kind == "CREDIT_CARD":
        label = rnd.choice(["カード番号：", "クレジットカード ", "お支払いカード "])
        return [Segment(label), Segment(digits(card(rnd, rnd.choice([" ", "-"]))), kind)]
    address = email(rnd)
    label = rnd.choice(["メール：", "連絡先 ", "E-mail "])
    return [Segment(label), Segment(full_width(address) if fw_email else address, kind)]


def _en_item(kind: str, rnd: random.Random) -> list[Segment]:
    if kind == "PHONE":
        return [Segment(rnd.choice(["Call us at ", "Phone: ", "Tel. "])), Segment(nanp_phone(rnd), kind)]
    if kind == "JP_MY_NUMBER":
        label = rnd.choice(["My Number: ", "Individual Number ", "My Number (Japan) "])
        return [Segment(label), Segment(my_number(rnd, rnd.choice([" ", ""])), kind)]
    if kind == "CREDIT_CARD":
        label = rnd.choice(["Card number: ", "Visa ", "Charged to card "])
        return [Segment(label), Segment(card(rnd, rnd.choice([" ", "-"])), kind)]
    return [Segment(rnd.choice(["Email: ", "Contact ", "Reply to "])), Segment(email(rnd), kind)]


def generated_page(
    rnd: random.Random, orientation: Orientation, kinds: list[str], *, size: int | None = None
) -> Page:
    """A page of filler (and, when `kinds` is empty, decoy numbers) with one line per seeded kind,
    shuffled. Font face and size are drawn from `rnd`; vertical pages use full-width digits mostly."""
    face = rnd.choice(list(FONTS))
    lines: list[list[Segment]] = []
    if orientation == "english":
        lines += [[Segment(text)] for text in rnd.sample(_EN_FILLER, 2)]
        lines += [_en_item(kind, rnd) for kind in kinds]
        if not kinds:
            lines += [[Segment(text)] for text in rnd.sample(_EN_DECOYS, 3)]
    else:
        vertical_page = orientation == "vertical"
        lines += [[Segment("".join(rnd.sample(_JA_FILLER, 2)))] for _ in range(2)]
        for kind in kinds:
            fw_digits = rnd.random() < (0.7 if vertical_page else 0.5)
            fw_email = vertical_page or rnd.random() < 0.2
            lines.append(_ja_item(kind, rnd, fw_digits, fw_email))
        if not kinds:
            decoys = rnd.sample(_JA_DECOYS, 3)
            lines += [[Segment(full_width(t) if vertical_page else t)] for t in decoys]
    rnd.shuffle(lines)
    if orientation == "vertical":
        return vertical(lines, size=size or rnd.randint(24, 36), face=face)
    page = horizontal(lines, size=size or rnd.randint(20, 36), face=face)
    page.orientation = orientation
    return page


def noisy(page: Page, rnd: random.Random) -> Page:
    """A light blur, as a scan or a resized screenshot has."""
    page.image = page.image.filter(ImageFilter.GaussianBlur(rnd.uniform(0.3, 0.8)))
    return page
