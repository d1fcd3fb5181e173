"""Misreadings every view of a page shared, put right: a context word's look-alike (固人番号, ーー人番号),
dots and a colon OCR left at an e-mail's local part, a caption line the layout cut in two, a line with
a value's label but no value read (read again alone: reread.py).

The pages are bench/ocr_bench.py's own (its plan, rendered at test time with the real CJK fonts), read by
the real Tesseract: the pages on which these misreadings were seen.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dropwarden_ocr import reread, stitch
from dropwarden_ocr.engine import OcrRegion
from dropwarden_ocr.normalize import normalize

from .test_ocr import judge_image, ocr_ready, overlap  # noqa: F401  (fixtures)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from ocr_bench import plan


def bench_page(seed: int, index: int):
    """Page `index` of `bench/ocr_bench.py --seed <seed>` (the benchmark saves a scan as JPEG)."""
    _name, page, fmt = plan(index + 1, seed)[index]
    assert fmt == ("JPEG" if page.orientation == "scan" else "PNG")
    return page


def found(judge_image, page, kind: str, **tesseract: object) -> list[str]:  # noqa: F811
    """The views that found the page's seeded value of `kind` where it was drawn."""
    (seeded,) = [s for s in page.seeded if s.kind == kind]
    scan = page.orientation == "scan"
    data = page.encode("JPEG", quality=60) if scan else page.encode()
    findings = judge_image(data, "page.jpg" if scan else "page.png", tesseract=tesseract).verdict.findings
    return [
        f.location.view for f in findings if f.type == kind and overlap(f.location.bbox, seeded.box) > 0.3
    ]


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        ("固人番号493377176509", "個人番号493377176509"),  # a look-alike kanji for 個
        ("ーー人番号 6418 1744 8742", "個人番号 6418 1744 8742"),  # 個 in a column, read as two dashes
        ("一一人番号：641817448742", "個人番号:641817448742"),
        # left alone: no digits after it, another word's kanji before it, 法人番号 (not My Number)
        ("ーー人番号です", "ーー人番号です"),
        ("本固人番号 1234", "本固人番号 1234"),
        ("法人番号1234567890123", "法人番号1234567890123"),
    ],
)
def test_the_my_number_context_word_is_read_through_its_look_alikes(read, expected):
    assert normalize(read, vertical=True).text == expected


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        ("メール...mika.yuki50@example.com", "メールmika.yuki50@example.com"),  # a column's colon
        ("メール：．ｍｉｋａ＠ｅｘａｍｐｌｅ．ｃｏｍ", "メール:mika@example.com"),
        ("Mail: mika_bob33:@example.co.jp", "Mail: mika_bob33@example.co.jp"),  # a sliver of the '@'
        # left alone: dots inside a local part, a label before the colon (it names no address)
        ("a...b@example.com", "a...b@example.com"),
        ("Mail:@example.com", "Mail:@example.com"),
        ("E-mail;@example.com", "E-mail;@example.com"),
    ],
)
def test_dots_and_a_colon_no_address_holds_go_from_its_local_part(read, expected):
    assert normalize(read).text == expected


def test_two_halves_of_a_line_side_by_side_are_one_line_and_columns_stay_apart():
    left = OcrRegion("Mail: taro:", (20, 100, 200, 122), 0.8, parts=((0, 11, (20, 100, 200, 122)),))
    right = OcrRegion("@example.com", (203, 101, 360, 122), 0.7)
    column = OcrRegion("Another column", (420, 100, 600, 122), 0.9)  # a gap wider than the line is high
    bubble = OcrRegion("電話", (205, 90, 230, 200), 0.9, vertical=True)
    (line, *rest) = stitch.joined([right, left, column, bubble])
    assert line.text == "Mail: taro:@example.com"
    assert line.bbox == (20, 100, 360, 122)
    assert line.parts == ((0, 11, (20, 100, 200, 122)), (11, 23, (203, 101, 360, 122)))
    assert rest == [column, bubble]


def test_two_halves_of_a_column_one_below_the_other_are_one_column():
    """A scanned column "マイナンバー(個人番号)1290 4592" whose last group "1525" the layout put apart."""
    upper = OcrRegion("マイナンバー(個人番号)1290 4592", (62, 32, 92, 384), 0.9, vertical=True)
    lower = OcrRegion("1525", (85, 404, 95, 469), 0.9, vertical=True)
    beside = OcrRegion("携帯090-1326-5345", (96, 28, 119, 298), 0.9, vertical=True)  # the next column
    far_below = OcrRegion("早く行こう", (62, 520, 92, 640), 0.9, vertical=True)  # another bubble's
    (column, *rest) = stitch.joined([upper, beside, lower, far_below])
    assert column.text == "マイナンバー(個人番号)1290 4592 1525"
    assert column.vertical and column.bbox == (62, 32, 95, 469)
    assert rest == [beside, far_below]


def test_a_my_number_after_a_misread_context_word_is_found(judge_image):  # noqa: F811
    """A serif page: Tesseract reads 個人番号 as 固人番号 on it."""
    page = bench_page(2, 30)
    assert "ocr:tesseract" in found(judge_image, page, "JP_MY_NUMBER")


def test_an_email_after_a_vertical_colon_read_as_dots_is_found(judge_image):  # noqa: F811
    """A vertical page: メール：ｍｉｋａ．… read as メール...mika.…"""
    page = bench_page(2, 37)
    assert "ocr:tesseract" in found(judge_image, page, "EMAIL")


def test_an_email_the_layout_cut_in_two_is_found(judge_image, monkeypatch):  # noqa: F811
    """A manga panel whose caption "Mail: mika_bob33@example.co.jp" the layout reads as two blocks,
    a sliver of the '@' as ':'; without the halves joined (nor the halves read again alone), no view
    finds it."""
    page = bench_page(1, 27)
    assert "ocr:tesseract" in found(judge_image, page, "EMAIL")
    monkeypatch.setattr(stitch, "joined", lambda regions: regions)
    assert found(judge_image, page, "EMAIL", line_rereads=0) == []


def test_lines_with_a_label_but_no_value_read_are_picked_for_a_read_of_their_own():
    def line(text: str, confidence: float = 0.8, **more: object) -> OcrRegion:
        return OcrRegion(text, (0, 0, 400, 30), confidence, **more)  # type: ignore[arg-type]

    garbled = [line("TEL 003-9124-2913", 0.5), line("連絡先 taro@maiLexamplejp", 0.7)]
    fine = [
        line("TEL 03-9124-2913"),  # a value's shape: the rules judge it
        line("個人番号 4933 7717 6509"),
        line("連絡先 taro@mail.example.jp"),
        line("2024年5月17日 10:30 開始"),  # no label
        line("注文番号 20240517-0012", 0.5),  # an order number's label: no PII's
        line("電話", vertical=True),  # vertical lines have reads of their own
        line("TEL 003-9124-2913", strategy="vertical"),
    ]
    assert reread.suspects(fine + garbled[::-1], 4) == garbled  # least sure first
    assert reread.suspects(fine + garbled, 1) == garbled[:1]
    assert reread.suspects(garbled, 0) == []


@pytest.mark.parametrize(
    ("seed", "index", "kind"),
    [
        (2, 30, "PHONE"),  # a serif page: ＴＥＬ ０３－… read as TEL 003-… on the page
        (1, 40, "EMAIL"),  # a caption on a manga panel: mika_yuki97@maiLexamplejp on the page
    ],
)
def test_a_value_misread_on_the_page_is_found_by_reading_its_line_alone(judge_image, seed, index, kind):  # noqa: F811
    page = bench_page(seed, index)
    assert "ocr:tesseract:lines" in found(judge_image, page, kind)
    assert found(judge_image, page, kind, line_rereads=0) == []
