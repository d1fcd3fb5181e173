"""OCR checks for `dropwarden doctor`: Tesseract binary, version, languages, and a test image read back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

from dropwarden_ocr.engine import OcrError
from dropwarden_ocr.tesseract import INSTALL_HINT, TesseractEngine, probe

if TYPE_CHECKING:
    from dropwarden.config import Settings

# (passed, text); passed None is a note: neither a failure nor a check that ran.
Check = tuple[bool | None, str]
_PROBE_TEXT = "Tel 415-555-2671"


def run_checks(settings: Settings) -> Iterator[Check]:
    ocr = settings.ocr
    if ocr.enabled is False:
        yield None, "ocr: [ocr] enabled = false: OCR is off"
        return
    tesseract = ocr.tesseract
    found = probe(tesseract.binary, str(tesseract.tessdata_dir) if tesseract.tessdata_dir else None)
    if found.problem:
        if ocr.enabled == "auto":
            yield None, f"ocr: tesseract not installed: OCR disabled ({INSTALL_HINT})"
        else:
            yield False, f"ocr: [ocr] enabled = true but {found.problem}"
        return
    yield True, f"ocr: tesseract {found.version} at {found.path}"
    missing = found.missing(tesseract.languages)
    have = ", ".join(found.languages) or "none"
    if missing:
        text = f"ocr: no language data for {', '.join(missing)} (have: {have}; {INSTALL_HINT})"
        if ocr.enabled == "auto":
            yield None, text + ": OCR disabled"
        else:
            yield False, text
        return
    yield True, f"ocr: languages {tesseract.languages} installed (have: {have})"
    try:
        engine = TesseractEngine(tesseract, min_confidence=ocr.min_confidence)
        started = time.monotonic()
        regions = engine.recognise(_probe_image(), time.monotonic() + ocr.timeout)
    except OcrError as exc:
        yield False, f"ocr: test image: {exc.reason}: {exc.detail}"
        return
    read = " ".join(region.text for region in regions)
    seconds = time.monotonic() - started
    if "555" in read:
        yield True, f"ocr: test image read in {seconds:.2f}s ({read!r})"
    else:
        yield False, f"ocr: test image misread in {seconds:.2f}s: {read!r}, expected {_PROBE_TEXT!r}"
    if "mangaocr" in ocr.engines:
        yield None, "ocr: mangaocr is configured; its model loads when the daemon starts"


def _probe_image() -> Image.Image:
    """Dark text on white, drawn with Pillow's built-in font (no font files needed)."""
    font = ImageFont.load_default(size=28)
    image = Image.new("L", (320, 60), 255)
    ImageDraw.Draw(image).text((12, 12), _PROBE_TEXT, font=font, fill=0)
    return image
