"""Vertical text in manga panels: speech bubbles on textured grey backgrounds, found and read again as one
vertical block (Tesseract `--psm 5`), within their own time budget, by the real Tesseract.

Panels are rendered at test time (tests/manga_pages.py) with a real CJK font.
"""

from __future__ import annotations

import time

import pytest

from dropwarden_ocr.vertical import find_bubbles

from .manga_pages import caption_panel, panel
from .ocr_pages import Segment, horizontal
from .test_ocr import judge_image, ocr_ready, overlap  # noqa: F401  (fixtures)

PHONE = "090-4502-5922"


def phone_bubble(style: str = "hatch"):
    """`電話090-4502-5922` as one column (digits and hyphens upright) beside a line of speech, the
    column running to the bubble's border, on a textured panel."""
    return panel([[Segment("電話"), Segment(PHONE, "PHONE")], [Segment("早く行こう")]], size=26, style=style)


@pytest.mark.parametrize("style", ["hatch", "dots"])
def test_a_phone_number_in_a_vertical_bubble_is_found_where_it_was_drawn(judge_image, style):  # noqa: F811
    page = phone_bubble(style)
    verdict = judge_image(page.encode()).verdict
    (seeded,) = page.seeded
    phones = [f for f in verdict.findings if f.type == "PHONE"]
    assert phones, verdict
    assert any(overlap(f.location.bbox, seeded.box) > 0.5 for f in phones), [f.location for f in phones]
    # the second, vertical read of the bubble found it, in a view of its own
    assert "ocr:tesseract:vertical" in {f.location.view for f in phones}


def test_without_the_vertical_read_the_bubble_is_missed(judge_image):  # noqa: F811
    """What the second read adds: the page-wide layout pass alone does not read the bubble's number."""
    verdict = judge_image(phone_bubble().encode(), tesseract={"vertical_reads": False}).verdict
    assert not [f for f in verdict.findings if f.type == "PHONE"], verdict


@pytest.mark.parametrize("style", ["hatch", "speed"])
def test_a_panel_with_decoy_numbers_stays_clean(judge_image, style):  # noqa: F811
    page = panel(
        [[Segment("注文番号20240517")], [Segment("第12話は五月十七日")], [Segment("内線1234")]], style=style
    )
    verdict = judge_image(page.encode()).verdict
    assert verdict.kind == "clean", verdict


def test_an_email_in_a_caption_box_on_screentone_is_found_by_the_caption_read(judge_image):  # noqa: F811
    page = caption_panel([Segment("連絡先 "), Segment("taroyamada86@example.com", "EMAIL")])
    (seeded,) = page.seeded
    emails = [f for f in judge_image(page.encode()).verdict.findings if f.type == "EMAIL"]
    assert any(overlap(f.location.bbox, seeded.box) > 0.5 for f in emails), emails
    assert "ocr:tesseract:captions" in {f.location.view for f in emails}


def test_the_vertical_read_gives_up_at_its_budget_and_the_first_pass_stands(judge_image):  # noqa: F811
    """A second read past `vertical_budget` is abandoned (its tesseract killed): the file is judged on
    the first pass, promptly, not unscanned."""
    started = time.monotonic()
    judgement = judge_image(phone_bubble().encode(), tesseract={"vertical_budget": 0.05})
    elapsed = time.monotonic() - started
    assert judgement.verdict.kind == "clean" and not judgement.verdict.problems, judgement.verdict
    first_pass = time.monotonic()
    judge_image(phone_bubble().encode(), tesseract={"vertical_reads": False})
    assert elapsed < (time.monotonic() - first_pass) + 1.0


def test_bubbles_are_found_on_panels_and_none_on_a_white_document(ocr_ready):  # noqa: F811
    page = phone_bubble("dots")
    (bubble,) = find_bubbles(page.image)
    assert overlap(bubble.box, page.seeded[0].box) == 1.0  # the whole column lies in the bubble
    document = horizontal([[Segment("お問い合わせは電話 "), Segment(PHONE, "PHONE")]] * 3)
    assert find_bubbles(document.image) == []
