"""Built-in OCR plugin: registers an `OcrExtractor` per engine in `[ocr] engines` when OCR is enabled."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from dropwarden.config import SettingError
from dropwarden.hookspecs import hookimpl
from dropwarden_ocr.engine import OcrEngine, OcrError, OcrRegion
from dropwarden_ocr.extractor import VERSION, OcrExtractor
from dropwarden_ocr.settings import OcrSettings, ocr_settings
from dropwarden_ocr.tesseract import INSTALL_HINT, TesseractEngine, probe, tesseract_regions

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from pydantic import BaseModel

    from dropwarden.config import Settings
    from dropwarden.hookspecs import Check

__version__ = VERSION
__all__ = [
    "OcrEngine",
    "OcrError",
    "OcrExtractor",
    "OcrRegion",
    "TesseractEngine",
    "__version__",
    "dropwarden_config_tables",
    "dropwarden_doctor_checks",
    "dropwarden_register_extractors",
    "tesseract_available",
    "tesseract_regions",
]

log = structlog.get_logger("dropwarden.ocr")


def tesseract_available(settings: Settings) -> str | None:
    """None when the configured tesseract and its languages are installed, else what is missing."""
    tesseract = ocr_settings(settings).tesseract
    found = probe(tesseract.binary, str(tesseract.tessdata_dir) if tesseract.tessdata_dir else None)
    if found.problem:
        return found.problem
    missing = found.missing(tesseract.languages)
    if missing:
        return f"tesseract has no language data for {', '.join(missing)} ({INSTALL_HINT})"
    return None


@hookimpl
def dropwarden_config_tables() -> Mapping[str, type[BaseModel]]:
    """The OCR plugin owns `[ocr]`."""
    return {"ocr": OcrSettings}


@hookimpl
def dropwarden_register_extractors(register: Callable[[Any], None], settings: Settings) -> None:
    """Register one OCR extractor per engine when `[ocr] enabled` is true, or "auto" and Tesseract is
    installed; with `enabled = true` a missing Tesseract is a configuration error."""
    ocr = ocr_settings(settings)
    if ocr.enabled is False:
        return
    tesseract: TesseractEngine | None = None
    problem = tesseract_available(settings)
    if problem is None:
        try:
            tesseract = TesseractEngine(ocr.tesseract, min_confidence=ocr.min_confidence)
        except OcrError as exc:
            problem = exc.detail
    if problem is not None:
        if ocr.enabled == "auto":
            log.info("OCR disabled: Tesseract is not usable", problem=problem)
            return
        raise SettingError(("ocr", "enabled"), f"OCR is enabled but {problem}")
    assert tesseract is not None
    for name in ocr.engines:
        engine: OcrEngine = tesseract if name == "tesseract" else _mangaocr(settings, tesseract)
        register(OcrExtractor(engine, ocr))


@hookimpl
def dropwarden_doctor_checks(settings: Settings) -> Iterator[Check]:
    """`dropwarden doctor`: Tesseract and its languages, a test image read back, MangaOCR when configured."""
    from dropwarden_ocr.doctor import run_checks

    yield from run_checks(settings)


def _mangaocr(settings: Settings, tesseract: TesseractEngine) -> OcrEngine:
    """MangaOCR reads one block per call: Tesseract's layout analysis cuts the page into blocks first."""
    from dropwarden.gate import get_gate
    from dropwarden_ocr.mangaocr import MangaOcrEngine

    manga = ocr_settings(settings).mangaocr
    resources = settings.gpu.resources
    if manga.device != "cpu" and manga.gpu_resource not in resources:
        raise SettingError(
            ("ocr", "mangaocr", "gpu_resource"),
            f"no GPU gate resource {manga.gpu_resource!r} in [gpu] resources (have: {sorted(resources)})",
        )
    # the process's one gate, whose waits and slots the daemon's /metrics reports
    gate = get_gate(settings.gpu) if manga.device != "cpu" else None
    return MangaOcrEngine(
        manga.model,
        device=manga.device,
        find_regions=tesseract.find_regions,
        gate=gate,
        gate_resource=manga.gpu_resource,
        min_free_memory_mib=settings.gpu.min_free_memory_mib,
        max_batch=manga.max_batch,
        max_wait=manga.max_wait_ms / 1000,
        cpu_fallback=manga.cpu_fallback,
    )
