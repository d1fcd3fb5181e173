"""The OCR plugin's `dropwarden doctor` checks: Tesseract (binary, version, languages, a test image read back)
and MangaOCR (installed, its model found locally), contributed through `dropwarden_doctor_checks`."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

from dropwarden.hookspecs import Check
from dropwarden_ocr.engine import OcrError
from dropwarden_ocr.settings import ocr_settings
from dropwarden_ocr.tesseract import INSTALL_HINT, TesseractEngine, probe

if TYPE_CHECKING:
    from dropwarden.config import Settings

_PROBE_TEXT = "Tel 415-555-2671"


def run_checks(settings: Settings) -> Iterator[Check]:
    """With `enabled = "auto"` a missing Tesseract is a warning (OCR is then off); with `true`, a failure."""
    ocr = ocr_settings(settings)
    if ocr.enabled is False:
        yield Check("ocr", "ok", "off ([ocr] enabled = false)")
        return
    missing_status = "warn" if ocr.enabled == "auto" else "fail"
    off = ": OCR disabled" if ocr.enabled == "auto" else ""
    tesseract = ocr.tesseract
    found = probe(tesseract.binary, str(tesseract.tessdata_dir) if tesseract.tessdata_dir else None)
    if found.problem:
        yield Check("ocr tesseract", missing_status, f"{found.problem} ({INSTALL_HINT}){off}")
        return
    yield Check("ocr tesseract", "ok", f"tesseract {found.version} at {found.path}")
    missing = found.missing(tesseract.languages)
    have = ", ".join(found.languages) or "none"
    if missing:
        detail = f"no language data for {', '.join(missing)} (have: {have}; {INSTALL_HINT}){off}"
        yield Check("ocr languages", missing_status, detail)
        return
    yield Check("ocr languages", "ok", f"{tesseract.languages} installed (have: {have})")
    yield _read_back(settings)
    if "mangaocr" in ocr.engines:
        yield _mangaocr_check(settings)


def _read_back(settings: Settings) -> Check:
    """Tesseract reads a number back from an image drawn here."""
    ocr = ocr_settings(settings)
    try:
        engine = TesseractEngine(ocr.tesseract, min_confidence=ocr.min_confidence)
        started = time.monotonic()
        regions = engine.recognise(_probe_image(), time.monotonic() + ocr.timeout)
    except OcrError as exc:
        return Check("ocr test image", "fail", f"{exc.reason}: {exc.detail}")
    read = " ".join(region.text for region in regions)
    seconds = time.monotonic() - started
    if "555" in read:
        return Check("ocr test image", "ok", f"read in {seconds:.2f}s ({read!r})")
    return Check("ocr test image", "fail", f"misread in {seconds:.2f}s: {read!r}, expected {_PROBE_TEXT!r}")


def _mangaocr_check(settings: Settings) -> Check:
    """MangaOCR is installed and its model is a local directory or in the local Hugging Face cache (the
    model itself loads when the daemon starts: too slow for a check)."""
    from dropwarden_ocr.mangaocr_model import local_dir, model_dir

    if importlib.util.find_spec("manga_ocr") is None:
        return Check("ocr mangaocr", "fail", "not installed: pip install 'dropwarden[mangaocr]'")
    model = ocr_settings(settings).mangaocr.model
    try:
        # A hub name is resolved in the local cache; nothing is downloaded.
        directory = model_dir(str(model), local_dir(model), cache_dir=None, allow_download=False)
    except (OcrError, ValueError) as exc:
        return Check("ocr mangaocr", "fail", getattr(exc, "detail", str(exc)))
    return Check("ocr mangaocr", "ok", f"model {model} found in {directory}; it loads when the daemon starts")


def _probe_image() -> Image.Image:
    """Dark text on white, drawn with Pillow's built-in font (no font files needed)."""
    font = ImageFont.load_default(size=28)
    image = Image.new("L", (320, 60), 255)
    ImageDraw.Draw(image).text((12, 12), _PROBE_TEXT, font=font, fill=0)
    return image
