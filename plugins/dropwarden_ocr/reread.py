"""Lines worth a read of their own: a horizontal line with a value's label (TEL, 個人番号, メール, '@',
…) whose value the page-wide pass read into no value's shape ("TEL 003-9124-2913", "taro@maiLexamplejp").

Read alone as one text line (`--psm 7`), enlarged 1.5 times and binarised, a line is read without the
page's layout guesses and at a size the model reads better; the text is a view of its own (strategy
"lines"), so it only ever adds findings. Only a few such lines per page are read (each is a Tesseract
run), the least sure first.
"""

from __future__ import annotations

import re

from PIL import Image

from dropwarden_ocr.engine import OcrRegion
from dropwarden_ocr.normalize import normalize

SCALE = 1.5
_INK = 150  # binarisation threshold
_MARGIN = 0.35  # of the line's height, white kept around it
# A value's label: phone, My Number, card and e-mail words (Japanese and English), or an '@'. Not any
# 番号 ("number"): order, tracking and reference numbers are no PII, and their lines cost no extra read.
_LABEL = re.compile(
    r"(?i)(?<![a-z])(?:tel|fax|phone|mail|card|my ?number|individual number)"
    r"|電話|携帯|個人番号|マイナンバー|カード|メール|連絡先|@"
)
# The shapes of the values the labels announce, in normalised text: a phone number, a 12-digit or a
# grouped 16-digit number, an e-mail address (whether a rule then accepts it is the rules' business)
# standing apart from letters and digits as the rules want them ("03-1964-4636TS" is no value)
_VALUE = re.compile(
    r"""(?x)
    (?<![0-9A-Za-z])
    (?:
        0[1-9][0-9]{0,3}-[0-9]{1,4}-[0-9]{3,4}                     # a Japanese phone number
      | \(?[2-9][0-9]{2}\)?[ .-][2-9][0-9]{2}[.-][0-9]{4}          # a North American one
      | [0-9]{4}([ -]?)[0-9]{4}\1[0-9]{4}(?:\1[0-9]{4})?          # 12 or 16 digits in fours
      | [A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}
    )
    (?![0-9A-Za-z])
    """
)


def suspects(regions: list[OcrRegion], limit: int) -> list[OcrRegion]:
    """Up to `limit` horizontal lines holding a label and digits or an '@', but no value's shape,
    least confident first."""
    chosen = []
    for region in regions:
        if region.vertical or region.strategy:
            continue
        text = normalize(region.text).text
        label = _LABEL.search(text)
        if label and (any(c.isdigit() for c in text) or "@" in text) and not _VALUE.search(text):
            chosen.append(region)
    chosen.sort(key=lambda r: r.confidence if r.confidence is not None else 0.0)
    return chosen[:limit]


def line_image(image: Image.Image, region: OcrRegion) -> tuple[Image.Image, tuple[int, int]]:
    """The line cut out with a white margin, enlarged `SCALE` times and binarised; and the page pixel
    of its origin (a box read in it maps back as origin + box / SCALE)."""
    grey = image if image.mode == "L" else image.convert("L")
    x0, y0, x1, y1 = region.bbox
    margin = max(4, round(_MARGIN * (y1 - y0)))
    box = (max(0, x0 - margin), max(0, y0 - margin), min(grey.width, x1 + margin))
    box += (min(grey.height, y1 + margin),)
    crop = grey.crop(box)
    size = (max(1, round(crop.width * SCALE)), max(1, round(crop.height * SCALE)))
    line = crop.resize(size, Image.Resampling.LANCZOS).point(lambda v: 0 if v < _INK else 255)
    framed = Image.new("L", (line.width + 2 * margin, line.height + 2 * margin), 255)
    framed.paste(line, (margin, margin))
    return framed, (box[0] - round(margin / SCALE), box[1] - round(margin / SCALE))
