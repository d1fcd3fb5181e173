"""The OCR extractor: a file's image → one engine → one normalised text view with boxes per word."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from dropwarden.findings import bbox_union
from dropwarden.images import (
    ImageRejected,
    check_size,
    open_untrusted,
    render_frame,
    unread_frames,
    upright_size,
)
from dropwarden.registry import Incomplete
from dropwarden.views import TextView, View
from dropwarden_ocr.engine import BBox, OcrEngine, OcrError, OcrIncomplete, OcrRegion
from dropwarden_ocr.normalize import normalize

if TYPE_CHECKING:
    from PIL import Image

    from dropwarden.intake import Snapshot
    from dropwarden_ocr.settings import OcrSettings

VERSION = "1.0.0"


@dataclass(frozen=True)
class Page:
    """One frame as the engine sees it (grey, upright, at most `max_side`) and the factors that map its
    pixels back to the original upright frame's."""

    image: Image.Image
    size: tuple[int, int]  # the original frame's, upright
    scale: tuple[float, float]
    frame: int = 0

    def to_original(self, box: BBox) -> BBox:
        sx, sy = self.scale
        width, height = self.size
        return (
            max(0, math.floor(box[0] * sx)),
            max(0, math.floor(box[1] * sy)),
            min(width, math.ceil(box[2] * sx)),
            min(height, math.ceil(box[3] * sy)),
        )


def load_pages(
    data: bytes, max_pixels: int, max_side: int, max_frames: int = 1
) -> tuple[list[Page], str | None]:
    """Decode the first `max_frames` frames (pages of a TIFF, frames of an animation) with the core's
    limits, each refused before decoding when over `max_pixels`. Returns them, and None when no frame
    follows, else what was left unread ("10 frames, only ocr.max_frames=4 read"). Raises OcrError:
    "too_large" for a size limit, "decode_error" for a damaged file."""
    pages: list[Page] = []
    try:
        with open_untrusted(data) as image:
            for index in range(max_frames):
                if index:
                    try:
                        image.seek(index)
                    except EOFError:
                        break
                check_size(image.size, max_pixels, "ocr.max_pixels")
                stored = image.size
                frame, orientation = render_frame(image, max_side)
                grey = frame.convert("L")
                width, height = upright_size(stored, orientation)
                pages.append(Page(grey, (width, height), (width / grey.width, height / grey.height), index))
            unread = unread_frames(image, data, len(pages), "ocr.max_frames")
    except ImageRejected as exc:
        raise OcrError("too_large" if exc.too_large else "decode_error", exc.reason) from None
    return pages, unread


class OcrExtractor:
    """Runs `engine` on the image of each image file, bounded by `[ocr] timeout`, and returns a text
    view per frame read, named "ocr:<engine>" (then "ocr:<engine>:frame<N>"): the regions' normalised
    text, one per line, with provenance (engine, model, frame, the image's size, the box of every
    region and word) from which findings get their boxes."""

    view_kinds: ClassVar[frozenset[str]] = frozenset({"image"})

    def __init__(self, engine: OcrEngine, settings: OcrSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.id = f"ocr-{engine.name}"
        # what decides the text read: the engine and its model, the limits, frames, confidence cut
        engine_id = [engine.name, engine.model, getattr(engine, "version", "")]
        material = [*engine_id, settings.model_dump(mode="json")]
        digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:10]
        self.version = f"{VERSION}+{engine.name}.{digest}"

    def settings_digest(self) -> Any:
        """The engine (name, model, version: Tesseract's release and page segmentation mode) and the
        effective `[ocr]` settings (languages, psm, limits, `min_confidence`, MangaOCR's model, …) as
        JSON; the core's ruleset version hashes it, so an OCR setting change re-judges images."""
        engine = self.engine
        return {
            "engine": [engine.name, engine.model, getattr(engine, "version", "")],
            "ocr": self.settings.model_dump(mode="json"),
        }

    def warm_up(self) -> None:
        """Load the engine's model now, where it has one (MangaOCR); the daemon calls this before READY."""
        warm_up = getattr(self.engine, "warm_up", None)
        if warm_up is not None:
            warm_up()

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def extract(self, snapshot: Snapshot, views: list[View]) -> list[View]:
        """A text view per frame of the file's image; frames past `[ocr] max_frames`, or a frame the
        engine read only in part (OcrIncomplete), raise Incomplete with the views of those read: their
        findings stand, and the file is not clean."""
        out: list[View] = []
        partial: Incomplete | None = None
        for view in views:
            if view.kind == "image":
                try:
                    read, unread = self.read_frames(view.data, view.name)  # type: ignore[union-attr]
                except Incomplete as exc:
                    read, unread, partial = list(exc.results), None, partial or exc
                for text in read:  # where the image came from (a container's member, a PDF page)
                    text.provenance.update(_carried(view.provenance))
                out.extend(read)
                if unread is not None:
                    raise Incomplete("too_large", unread, out)
        if partial is not None:
            raise Incomplete(partial.reason, partial.detail, out)
        return out

    def read(self, data: bytes, source: str = "image") -> TextView:
        """OCR of an image's (first frame's) bytes as a text view; raises OcrError on failure (and
        Incomplete, with the views read, where the engine read the frame only in part)."""
        return self.read_frames(data, source)[0][0]

    def read_frames(self, data: bytes, source: str = "image") -> tuple[list[TextView], str | None]:
        """One text view per frame read (up to `[ocr] max_frames`), all within one `[ocr] timeout`:
        "ocr:<engine>" for the first, "ocr:<engine>:frame<N>" for the others; and None when no frame
        was left unread, else what was ("10 frames, only ocr.max_frames=4 read"). Raises OcrError; where
        the engine read a frame only in part (OcrIncomplete), reads the other frames and then raises
        Incomplete (its reason and detail, and any frames left unread) with every view read."""
        deadline = time.monotonic() + self.settings.timeout
        pages, unread = load_pages(
            data, self.settings.max_pixels, self.settings.max_side, self.settings.max_frames
        )
        views = []
        partial: OcrIncomplete | None = None
        for page in pages:
            try:
                regions = self.engine.recognise(page.image, deadline)
            except OcrIncomplete as exc:
                regions, partial = exc.regions, partial or exc
            except OcrError as exc:
                if exc.reason == "timeout":  # named by the limit the operator set
                    detail = f"not read within {self.settings.timeout:g}s: {exc.detail}"
                    raise OcrError("timeout", detail) from None
                raise
            except Exception as exc:
                raise OcrError("detector_error", f"{self.engine.name}: {type(exc).__name__}: {exc}") from None
            views += self._views(regions, page, source, len(pages), unread is not None)
        if partial is not None:
            detail = partial.detail + (f"; {unread}" if unread is not None else "")
            raise Incomplete(partial.reason, detail, views)
        return views, unread

    def _views(
        self, regions: list[OcrRegion], page: Page, source: str, frames: int, unread: bool
    ) -> list[TextView]:
        """The text views of one frame: one per way the engine read it."""
        minimum = self.settings.min_confidence
        kept = [r for r in regions if r.confidence is None or r.confidence >= minimum]
        name = f"ocr:{self.engine.name}" + (f":frame{page.frame}" if page.frame else "")
        if source != "image" and not source.startswith("appended"):  # an image inside a document
            name = f"{name}:{source}"
        views = []
        # each way the engine read the page is a view of its own ("" first, always present)
        strategies = dict.fromkeys(["", *(r.strategy for r in kept)])
        for strategy in strategies:
            chosen = [r for r in kept if r.strategy == strategy]
            view = build_view(f"{name}:{strategy}" if strategy else name, self.engine, chosen, page, source)
            view.provenance.update(frames_read=frames, frames_unread=unread)
            if strategy:
                view.provenance["strategy"] = strategy
            views.append(view)
        return views


def _carried(provenance: dict[str, Any]) -> dict[str, Any]:
    """The provenance an image from inside a container hands on to the text read from it."""
    return {key: provenance[key] for key in ("within",) if key in provenance}


def build_view(name: str, engine: OcrEngine, regions: list[OcrRegion], page: Page, source: str) -> TextView:
    """Join the regions' normalised texts with newlines; record the original-pixel box of every region
    and of every part (word) as character ranges of the joined text."""
    pieces: list[str] = []
    boxes: list[tuple[int, int, BBox]] = []
    described: list[dict[str, Any]] = []
    offset = 0
    for region in regions:
        normal = normalize(region.text, vertical=region.vertical)
        if not normal.text.strip():
            continue
        parts = region.parts or ((0, len(region.text), region.bbox),)
        for start, end, box in parts:
            first, last = normal.span(start, end)
            if last > first:
                boxes.append((offset + first, offset + last, page.to_original(box)))
        described.append(
            {
                "bbox": page.to_original(region.bbox),
                "start": offset,
                "end": offset + len(normal.text),
                "confidence": None if region.confidence is None else round(region.confidence, 3),
                "vertical": region.vertical,
            }
        )
        pieces.append(normal.text)
        offset += len(normal.text) + 1
    provenance: dict[str, Any] = {
        "source": "ocr",
        "derived_from": source,
        "engine": engine.name,
        "model": engine.model,
        "image_view": source,
        "frame": page.frame,
        "image_size": page.size,
        "bbox": bbox_union([r["bbox"] for r in described]) if described else (0, 0, *page.size),
        "boxes": tuple(boxes),
        "regions": tuple(described),
    }
    return TextView(name, "\n".join(pieces), "utf-8", provenance)
