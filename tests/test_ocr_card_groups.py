"""Card numbers in OCR text: any single-space or hyphen grouping of a Luhn-valid 13-19 digit number is read
whole (OCR of a scanned 4111 1111 1111 1111 gives 4111 111111111111), in OCR views only."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image, ImageDraw, ImageFont
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

from dropwarden.config import Settings
from dropwarden.redact import Fingerprinter
from dropwarden.registry import DetectContext
from dropwarden.runtime import build_runtime
from dropwarden.views import TextView
from dropwarden_ocr.normalize import normalize
from dropwarden_ocr.tesseract import probe
from dropwarden_regex import RegexDetector

from .conftest import require


@pytest.mark.parametrize(
    ("read", "whole"),
    [
        ("card 4111 111111111111 exp 12/27", "card 4111111111111111 exp 12/27"),
        ("card 411111 1111111111", "card 4111111111111111"),
        ("Amex 3782-82246310005", "Amex 378282246310005"),
        ("ref 12 4012 888888881881", "ref 12 4012888888881881"),  # the card is the longest valid stretch
        ("4111 1111-1111 1111", "4111111111111111"),  # mixed separators
    ],
)
def test_ocr_groupings_of_a_luhn_valid_card_number_are_read_whole(read, whole):
    normal = normalize(read)
    assert normal.text == whole
    # every character still maps back to the one it was read from
    assert [read[i] for i in normal.origin] == list(whole)


@pytest.mark.parametrize(
    "read",
    [
        "card 4111 111111111112",  # Luhn fails
        "DE89 3704 0044 0532 0130 00",  # an IBAN's digit groups, beside its letters-and-digits head
        "tel 03 1234 5678",  # too few digits
        "9400 1000 0000 0000 0000 00",  # a tracking number: no stretch starts 2-6 with 4 digits and is valid
        "1234 5678 9018",  # a My Number: 12 digits
        "invoice 2023 1104 7781 0042 done",  # not Luhn-valid
        "4111 1111 1111 1111",  # grouped as printed: the card rule reads it as it is
        "3782 822463 10005",
    ],
)
def test_other_digit_groupings_in_ocr_text_are_left_as_read(read):
    assert normalize(read).text == read


def test_plain_text_keeps_its_card_groupings_strict():
    """Outside OCR views a 4-12 grouping is not a card (plain-text precision is unchanged)."""
    ctx = DetectContext(Fingerprinter(b"k" * 32), "/srv/drop/in/a.txt")
    view = TextView(name="text", text="card 4111 111111111111 exp", encoding="utf-8")
    assert RegexDetector().detect(view, ctx) == []


def scanned_pdf(lines: list[str]) -> bytes:
    """A PDF page that is only a picture of `lines` (Pillow's default font, the page drawn at 150 dpi
    and placed on A4), as bench/documents_bench.py builds its scanned page."""
    image = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(image)
    for row, text in enumerate(lines):
        draw.text((100, 150 + row * 60), text, fill=0, font=ImageFont.load_default(size=32))
    out = io.BytesIO()
    pdf = canvas.Canvas(out)
    pdf.drawImage(ImageReader(image), 0, 0, 595, 842)
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def test_a_card_number_on_a_scanned_pdf_page_is_found_by_ocr(tmp_path):
    """OCR reads this page's card as 4111 111111111111; the card rule alone would miss it."""
    found = probe("tesseract")
    require(found.problem is None and not found.missing("eng"), "tesseract with eng language data")
    runtime = build_runtime(Settings(state={"dir": tmp_path / "state"}, ocr={"enabled": True}))
    folder = tmp_path / "in"
    folder.mkdir()
    lines = ["Quarterly report: shipments left the warehouse", "card 4111 1111 1111 1111", "Thank you."]
    (folder / "scan.pdf").write_bytes(scanned_pdf(lines))
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        judgement = runtime.judge.judge_name(fd, "scan.pdf", str(folder / "scan.pdf"))
    finally:
        os.close(fd)
        runtime.close()
    assert judgement.verdict.kind == "finding", judgement.verdict
    (card,) = [f for f in judgement.verdict.findings if f.type == "CREDIT_CARD"]
    assert card.location.view.startswith("ocr:")
