"""Vertical text in manga panels: speech bubbles on textured grey backgrounds, found and read again as one
vertical block (Tesseract `--psm 5`), within their own time budget, by the real Tesseract.

Panels are rendered at test time (tests/manga_pages.py) with a real CJK font.
"""

from __future__ import annotations

import time

import pytest

from dropwarden_ocr.background import cleaned
from dropwarden_ocr.vertical import find_bubbles

from .manga_pages import caption_panel, panel
from .ocr_pages import Segment, horizontal
from .test_ocr import judge_image, ocr_ready, overlap  # noqa: F401  (fixtures)

PHONE = "090-4502-5922"
# the second reads' budget, where a test is not about it: a loaded test machine must not spend it
GENEROUS = {"vertical_budget": 60.0}


def phone_bubble(style: str = "hatch"):
    """`電話090-4502-5922` as one column (digits and hyphens upright) beside a line of speech, the
    column running to the bubble's border, on a textured panel."""
    return panel([[Segment("電話"), Segment(PHONE, "PHONE")], [Segment("早く行こう")]], size=26, style=style)


@pytest.mark.parametrize("style", ["hatch", "dots"])
def test_a_phone_number_in_a_vertical_bubble_is_found_where_it_was_drawn(judge_image, style):  # noqa: F811
    page = phone_bubble(style)
    verdict = judge_image(page.encode(), tesseract=GENEROUS).verdict
    (seeded,) = page.seeded
    phones = [f for f in verdict.findings if f.type == "PHONE"]
    assert phones, verdict
    # every view found it where it was drawn: the second reads' panes map back to page pixels
    assert all(overlap(f.location.bbox, seeded.box) > 0.5 for f in phones), [f.location for f in phones]
    # the second, vertical read of the bubble found it, in a view of its own
    assert "ocr:tesseract:vertical" in {f.location.view for f in phones}


def test_without_the_vertical_read_the_bubble_is_missed(judge_image):  # noqa: F811
    """What the second read adds: the page-wide layout pass alone, on the textured page as it is, does
    not read the bubble's number."""
    settings = {"vertical_reads": False, "clean_background": False}
    verdict = judge_image(phone_bubble().encode(), tesseract=settings).verdict
    assert not [f for f in verdict.findings if f.type == "PHONE"], verdict


@pytest.mark.parametrize("style", ["hatch", "dots"])
def test_the_first_pass_reads_a_bubble_once_the_screentone_around_it_is_cleaned(judge_image, style):  # noqa: F811
    """The texture outside the bubble opened away, the page-wide pass itself reads the bubble's number."""
    page = phone_bubble(style)
    verdict = judge_image(page.encode(), tesseract={"vertical_reads": False}).verdict
    phones = [f for f in verdict.findings if f.type == "PHONE"]
    assert any(overlap(f.location.bbox, page.seeded[0].box) > 0.5 for f in phones), verdict
    assert "ocr:tesseract" in {f.location.view for f in phones}


@pytest.mark.parametrize("style", ["hatch", "speed"])
def test_a_panel_with_decoy_numbers_stays_clean(judge_image, style):  # noqa: F811
    page = panel(
        [[Segment("注文番号20240517")], [Segment("第12話は五月十七日")], [Segment("内線1234")]], style=style
    )
    verdict = judge_image(page.encode(), tesseract=GENEROUS).verdict
    assert verdict.kind == "clean", verdict


@pytest.mark.parametrize(
    ("clean_background", "view"), [(True, "ocr:tesseract"), (False, "ocr:tesseract:captions")]
)
def test_an_email_in_a_caption_box_on_screentone_is_found(judge_image, clean_background, view):  # noqa: F811
    """By the first pass on the cleaned panel; else by the second read of caption boxes."""
    page = caption_panel([Segment("連絡先 "), Segment("taroyamada86@example.com", "EMAIL")])
    (seeded,) = page.seeded
    settings = {**GENEROUS, "clean_background": clean_background}
    emails = [f for f in judge_image(page.encode(), tesseract=settings).verdict.findings if f.type == "EMAIL"]
    assert any(overlap(f.location.bbox, seeded.box) > 0.5 for f in emails), emails
    assert view in {f.location.view for f in emails}


def test_a_bubble_left_unread_at_the_vertical_budget_makes_the_image_unscanned(judge_image):  # noqa: F811
    """A second read past `vertical_budget` is abandoned (its tesseract killed) and, a bubble found but
    not read, the image is not fully judged: never clean, `unscanned` (timeout) unless the first pass
    found something, promptly."""
    started = time.monotonic()
    judgement = judge_image(
        phone_bubble().encode(), tesseract={"vertical_budget": 0.05, "clean_background": False}
    )
    elapsed = time.monotonic() - started
    verdict = judgement.verdict
    assert verdict.kind == "unscanned", verdict
    (problem,) = verdict.problems
    assert problem.reason == "timeout" and "vertical_budget" in problem.detail, problem
    first_pass = time.monotonic()
    judge_image(phone_bubble().encode(), tesseract={"vertical_reads": False, "clean_background": False})
    assert elapsed < (time.monotonic() - first_pass) + 1.0


def test_findings_of_the_first_pass_stand_when_the_vertical_budget_is_spent(judge_image):  # noqa: F811
    page = phone_bubble()
    verdict = judge_image(page.encode(), tesseract={"vertical_budget": 0.05}).verdict
    assert verdict.kind == "finding" and [f for f in verdict.findings if f.type == "PHONE"], verdict
    assert [p.reason for p in verdict.problems] == ["timeout"]


def test_with_vertical_budget_spent_first_pass_the_image_is_judged_on_what_was_read(judge_image):  # noqa: F811
    """The operator's choice: the second reads' budget spent, the file is judged on the first pass."""
    settings = {"vertical_budget": 0.05, "vertical_budget_spent": "first_pass", "clean_background": False}
    verdict = judge_image(phone_bubble().encode(), tesseract=settings).verdict
    assert verdict.kind == "clean" and not verdict.problems, verdict


def test_bubbles_are_found_on_panels_and_none_on_a_white_document(ocr_ready):  # noqa: F811
    page = phone_bubble("dots")
    (bubble,) = find_bubbles(page.image)
    assert overlap(bubble.box, page.seeded[0].box) == 1.0  # the whole column lies in the bubble
    document = horizontal([[Segment("お問い合わせは電話 "), Segment(PHONE, "PHONE")]] * 3)
    assert find_bubbles(document.image) == []


def test_the_texture_is_cleaned_around_bubbles_and_documents_are_left_alone(ocr_ready):  # noqa: F811
    page = phone_bubble("dots")
    bubbles = find_bubbles(page.image)
    clean = cleaned(page.image, bubbles)
    assert clean is not None
    corner = (0, 0, 120, 120)  # screentone, far from the bubble
    ink = clean.crop(corner).point(lambda v: 255 if v < 170 else 0).histogram()[255]
    assert ink == 0 and page.image.crop(corner).point(lambda v: 255 if v < 170 else 0).histogram()[255] > 100
    text = page.seeded[0].box  # the bubble's text is kept as drawn
    assert clean.crop(text).tobytes() == page.image.convert("L").crop(text).tobytes()
    document = horizontal([[Segment("お問い合わせは電話 "), Segment(PHONE, "PHONE")]] * 3)
    assert cleaned(document.image, find_bubbles(document.image)) is None
