"""The OCR plugin's settings: the `[ocr]` table and its engines' sub-tables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from dropwarden.config import Settings, Strict


class TesseractSettings(Strict):
    """The Tesseract OCR engine: a CLI run per image (CPU), bounded in time and memory."""

    binary: str = "tesseract"
    tessdata_dir: Path | None = None
    languages: str = Field(default="jpn+jpn_vert+eng", pattern=r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
    psm: int = Field(default=3, ge=1, le=13)
    threads: int = Field(default=1, ge=1, le=64)
    max_memory_mib: int = Field(default=1024, ge=64)
    region_languages: str = Field(default="osd", pattern=r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
    region_level: Literal["block", "paragraph", "line"] = "block"
    clean_background: bool = True
    vertical_reads: bool = True
    vertical_languages: str = Field(default="jpn_vert", pattern=r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
    vertical_budget: float = Field(default=3.0, gt=0)
    vertical_budget_spent: Literal["unscanned", "first_pass"] = "unscanned"
    max_vertical_blocks: int = Field(default=8, ge=1, le=64)
    line_rereads: int = Field(default=2, ge=0, le=16)


class MangaOcrSettings(Strict):
    """The MangaOCR engine (extra `mangaocr`): one text block per call, regions found by Tesseract."""

    model: str = "kha-white/manga-ocr-base"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpu_resource: str = "gpu0"
    max_batch: int = Field(default=32, ge=1, le=256)
    max_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    cpu_fallback: bool = True


class OcrSettings(Strict):
    """OCR extractors: text read from images becomes text views that every text detector judges."""

    enabled: bool | Literal["auto"] = "auto"
    engines: list[Literal["tesseract", "mangaocr"]] = Field(default=["tesseract"], min_length=1)
    timeout: float = Field(default=25.0, gt=0)
    max_pixels: int = Field(default=50_000_000, ge=1)
    max_side: int = Field(default=4096, ge=32, le=32768)
    max_frames: int = Field(default=4, ge=1)
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    tesseract: TesseractSettings = TesseractSettings()
    mangaocr: MangaOcrSettings = MangaOcrSettings()

    @field_validator("engines")
    @classmethod
    def _unique(cls, engines: list[str]) -> list[str]:
        if len(set(engines)) != len(engines):
            raise ValueError("each engine may be named once")
        return engines


def ocr_settings(settings: Settings) -> OcrSettings:
    """The `[ocr]` table of these settings."""
    return settings.table("ocr", OcrSettings)
