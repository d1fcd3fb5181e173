"""What an OCR engine is: image in, recognised text regions (with bounding boxes) out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from dropwarden.findings import BBox

if TYPE_CHECKING:
    from PIL import Image

# BBox: (left, top, right, bottom), right and bottom exclusive. An engine reports boxes in pixels of the
# image it was given; the extractor maps them to pixels of the original (upright) image before use.
__all__ = ["BBox", "OcrEngine", "OcrError", "OcrIncomplete", "OcrRegion", "short_error"]


@dataclass(frozen=True)
class OcrRegion:
    """One recognised block of text and where it sits in the image."""

    text: str
    bbox: BBox
    confidence: float | None = None  # 0..1 where the engine reports one
    vertical: bool = False
    # Finer boxes where the engine has them (Tesseract's words): (start, end, bbox) character ranges
    # of `text`, in order. A finding then gets the box of the words it matched, not the whole region's.
    parts: tuple[tuple[int, int, BBox], ...] = ()
    # Which read found it, where an engine reads a page more than one way ("" the first, page-wide one;
    # "vertical" Tesseract's second read of bubbles and vertical blocks): each is a view of its own.
    strategy: str = ""


class OcrError(Exception):
    """The engine could not read the image (crashed, timed out, refused it): the file is `unscanned`.

    `reason` is a `dropwarden.verdict.Reason` value name ("timeout", "detector_error", "too_large").
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class OcrIncomplete(OcrError):
    """The engine read only part of the image (a speech bubble found but not read within its budget):
    `regions`, what it did read, stand; the file gets a problem with `reason`, so it is never clean."""

    def __init__(self, reason: str, detail: str, regions: list[OcrRegion]) -> None:
        super().__init__(reason, detail)
        self.regions = regions


def short_error(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line for an OcrError's detail: its type and message, at most `limit` characters."""
    text = re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class OcrEngine(Protocol):
    """An OCR engine. `name` ("tesseract", "mangaocr") and `model` (language data or model path) go
    into each view's provenance. `recognise` must return by `deadline` (time.monotonic()) or raise
    OcrError("timeout", ...)."""

    name: str
    model: str

    def recognise(self, image: Image.Image, deadline: float) -> list[OcrRegion]: ...
