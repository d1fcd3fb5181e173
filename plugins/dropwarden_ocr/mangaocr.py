"""The MangaOCR engine: finds text regions on a page, crops each one and reads it with `manga_ocr.MangaOcr`.

MangaOCR (a ViT encoder + BERT decoder, `kha-white/manga-ocr-base`) reads one block of Japanese text per
call, horizontal or vertical, so a page is first cut into regions by a region finder (Tesseract's layout
analysis, from `dropwarden_ocr`); without one the whole image is one region, which suits images of a
single speech bubble or line and little else.

The model is loaded lazily, once, under a lock (`warm_up()` loads it before the daemon is ready) and always
from a local directory with the Hugging Face hub switched offline: a hub name is first resolved in the
local Hugging Face cache and downloaded only when `allow_download` says so. A failed load is remembered
and retried only after `load_retry_after` seconds, so a broken model costs one clear error per image, not
one load per image. Inference is serialized (one image at a time per engine).

The GPU gate: work on a CUDA device (the load, which uploads the weights, and each image's regions)
holds one slot of `gate_resource` for its duration; CPU work does not, since it shares no accelerator
(`use_gate=True` gates it anyway). Needs the `mangaocr` extra (manga-ocr, torch, transformers); without it
the engine still constructs, and loading fails with a message that names the extra. Loading turns
transformers' own logging down to errors and its progress bars off, process-wide, and silences
manga_ocr's loguru lines: the engine logs the load itself. Where the model comes from and the device it runs
on: mangaocr_model.py.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from dropwarden.gate import GateError, GateTimeout, check_gpu_memory
from dropwarden_ocr.engine import BBox, OcrError, OcrRegion, short_error
from dropwarden_ocr.mangaocr_model import (
    DEFAULT_MODEL,
    hub_offline,
    import_manga_ocr,
    local_dir,
    model_dir,
    on_cuda_device,
    resolve_device,
    writable_code_forbidden,
)

if TYPE_CHECKING:
    from PIL import Image

    from dropwarden.gate import Gate

__all__ = ["DEFAULT_MODEL", "MangaOcrEngine", "RegionFinder", "writable_code_forbidden"]

log = structlog.get_logger("dropwarden.ocr")

RegionFinder = Callable[["Image.Image", float], Sequence[BBox]]

_DEVICE = re.compile(r"cpu|auto|cuda(:\d+)?")
VERTICAL_ASPECT = 1.5  # a region this many times taller than wide is taken for vertical text


class MangaOcrEngine:
    """`OcrEngine` over `manga_ocr.MangaOcr`; thread-safe, one model per engine, loaded once."""

    name = "mangaocr"

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        device: str = "auto",
        find_regions: RegionFinder | None = None,
        gate: Gate | None = None,
        gate_resource: str = "gpu0",
        use_gate: bool | None = None,
        max_regions: int = 64,
        min_region_size: int = 8,
        padding: int = 4,
        max_tokens: int = 300,
        min_free_memory_mib: int = 0,
        allow_download: bool = False,
        cache_dir: Path | str | None = None,
        load_timeout: float = 600.0,
        load_retry_after: float = 300.0,
    ):
        """
        model: a directory holding a saved MangaOCR model, or a hub name (`kha-white/manga-ocr-base`)
            looked up in the local Hugging Face cache (`cache_dir`, else HF_HUB_CACHE / HF_HOME).
        device: "cpu", "cuda", "cuda:N", or "auto" (CUDA when torch sees a GPU, else the CPU).
        find_regions: `(image, deadline) -> boxes` in reading order; None: the whole image is one region.
        gate, gate_resource, use_gate: GPU work holds one slot of `gate_resource`; `use_gate` None gates
            exactly the CUDA devices, True gates the CPU too, False never (then `gate` may be None).
        max_regions: at most this many regions are read per image, the largest ones (a warning says so).
        min_region_size: regions narrower or lower than this (pixels) are skipped.
        padding: pixels of margin added around each region when cropping (clamped to the image).
        max_tokens: the longest answer per region, in tokens (MangaOcr's own limit is 300).
        min_free_memory_mib: on CUDA, NVML must report this much free before loading (0: no check).
        allow_download: fetch a hub name that is not in the local cache (else: an error naming it).
        load_timeout: how long `warm_up()` waits for the engine's lock and the gate.
        load_retry_after: seconds during which a failed load is not tried again.
        """
        if not _DEVICE.fullmatch(device):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', not {device!r}")
        for key, value, least in (
            ("max_regions", max_regions, 1),
            ("min_region_size", min_region_size, 1),
            ("padding", padding, 0),
            ("max_tokens", max_tokens, 2),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{key} must be an integer of at least {least}, not {value!r}")
        if use_gate is not False:
            if gate is None and (use_gate or device != "cpu"):
                raise ValueError("a GPU gate is needed (gate=...) unless device='cpu' or use_gate=False")
            if gate is not None and gate_resource not in gate.capacities:
                raise ValueError(f"no GPU gate resource {gate_resource!r} (have: {sorted(gate.capacities)})")
        self.model = str(model)
        self.device = device  # the configured one; `resolved_device` once loaded
        self._local = local_dir(model)
        self._find_regions = find_regions
        self._gate = gate
        self._gate_resource = gate_resource
        self._use_gate = use_gate
        self._max_regions = max_regions
        self._min_region_size = min_region_size
        self._padding = padding
        self._max_tokens = max_tokens
        self._min_free_mib = min_free_memory_mib
        self._allow_download = allow_download
        self._cache_dir = None if cache_dir is None else str(cache_dir)
        self._load_timeout = load_timeout
        self._load_retry_after = load_retry_after
        self._lock = threading.Lock()  # one load, one image at a time
        self._ocr: Any = None  # manga_ocr.MangaOcr once loaded
        self._failure: tuple[OcrError, float] | None = None
        self._closed = False
        self.resolved_device: str | None = None
        self.loads = 0  # how many times a model was loaded: 0, then 1
        self.load_seconds: float | None = None

    # OcrEngine

    def recognise(self, image: Image.Image, deadline: float) -> list[OcrRegion]:
        """Find the regions, then read each one; raises OcrError (timeout, detector_error) instead of
        returning partial results. Blocking: call it from a worker thread."""
        plan = self._plan(image, self._regions(image, deadline))
        if not plan:
            return []
        with self._locked(deadline, "busy with another image"):
            ocr = self._ensure_loaded(deadline)
            with self._gate_slot(deadline):
                return self._read_all(ocr, image, plan, deadline)

    # daemon hooks

    def warm_up(self) -> None:
        """Load the model now (the daemon calls this before READY=1); raises OcrError on failure."""
        deadline = time.monotonic() + self._load_timeout
        with self._locked(deadline, "busy past load_timeout"):
            self._ensure_loaded(deadline)

    def close(self) -> None:
        """Drop the model (and free CUDA memory); idempotent. Later calls raise OcrError."""
        with self._lock:
            self._closed = True
            ocr, self._ocr = self._ocr, None
        if ocr is not None and (self.resolved_device or "").startswith("cuda"):
            del ocr
            import torch

            torch.cuda.empty_cache()

    @property
    def gate(self) -> Gate | None:
        """The GPU gate this engine's gated work passes (the daemon's is `dropwarden.gate.get_gate`)."""
        return self._gate

    @property
    def gated(self) -> bool:
        """Whether this engine's work passes the GPU gate (known for sure once loaded)."""
        if self._use_gate is not None:
            return self._use_gate
        return (self.resolved_device or self.device) != "cpu"

    # regions

    def _regions(self, image: Image.Image, deadline: float) -> Sequence[BBox]:
        if self._find_regions is None:
            return [(0, 0, image.width, image.height)]
        try:
            boxes = self._find_regions(image, deadline)
        except OcrError:
            raise
        except Exception as exc:
            raise OcrError(
                "detector_error", f"MangaOCR: the region finder failed: {short_error(exc)}"
            ) from None
        if time.monotonic() >= deadline:
            raise OcrError("timeout", "MangaOCR: the deadline passed while finding text regions")
        return boxes

    def _plan(self, image: Image.Image, boxes: Sequence[BBox]) -> list[tuple[BBox, BBox]]:
        """(region, crop box) pairs in the finder's order: boxes clamped to the image, small ones
        skipped, at most `max_regions` (the largest), each crop padded."""
        width, height = image.size
        kept: list[BBox] = []
        for box in boxes:
            try:
                left, top, right, bottom = (int(v) for v in box)
            except (TypeError, ValueError):
                raise OcrError(
                    "detector_error", f"MangaOCR: the region finder gave a malformed box {box!r:.80}"
                ) from None
            left, top = max(0, left), max(0, top)
            right, bottom = min(width, right), min(height, bottom)
            if right - left >= self._min_region_size and bottom - top >= self._min_region_size:
                kept.append((left, top, right, bottom))
        if len(kept) > self._max_regions:
            log.warning(
                "mangaocr: too many text regions; reading the largest only",
                regions=len(kept),
                read=self._max_regions,
            )
            largest = sorted(range(len(kept)), key=lambda i: -_area(kept[i]))[: self._max_regions]
            kept = [kept[i] for i in sorted(largest)]
        pad = self._padding
        return [
            (
                box,
                (
                    max(0, box[0] - pad),
                    max(0, box[1] - pad),
                    min(width, box[2] + pad),
                    min(height, box[3] + pad),
                ),
            )
            for box in kept
        ]

    # reading

    def _read_all(
        self, ocr: Any, image: Image.Image, plan: list[tuple[BBox, BBox]], deadline: float
    ) -> list[OcrRegion]:
        regions: list[OcrRegion] = []
        for index, (box, crop_box) in enumerate(plan):
            if time.monotonic() >= deadline:
                raise OcrError(
                    "timeout", f"MangaOCR: deadline passed with {index} of {len(plan)} regions read"
                )
            text, confidence = self._read(ocr, _crop(image, crop_box), deadline)
            if time.monotonic() >= deadline:  # generation stops at the deadline: its text may be cut short
                raise OcrError(
                    "timeout", f"MangaOCR: deadline passed while reading region {index + 1} of {len(plan)}"
                )
            if text:
                vertical = (box[3] - box[1]) > VERTICAL_ASPECT * (box[2] - box[0])
                regions.append(OcrRegion(text, box, confidence, vertical))
        return regions

    def _read(self, ocr: Any, crop: Image.Image, deadline: float) -> tuple[str, float | None]:
        """What `MangaOcr.__call__` does, with the answer's length and time bounded and a confidence."""
        import torch
        from manga_ocr.ocr import post_process

        try:
            pixels = ocr.processor(crop, return_tensors="pt").pixel_values
            with torch.inference_mode():
                out = ocr.model.generate(
                    pixels.to(ocr.model.device),
                    max_length=self._max_tokens,
                    max_time=max(0.001, deadline - time.monotonic()),
                    output_scores=True,
                    return_dict_in_generate=True,
                )
            tokens = out.sequences[0].cpu()
            text = post_process(ocr.tokenizer.decode(tokens, skip_special_tokens=True))
            confidence = _confidence(out.scores, tokens, set(ocr.tokenizer.all_special_ids))
        except Exception as exc:  # RuntimeError from torch (CUDA out of memory, …)
            raise OcrError("detector_error", f"MangaOCR failed: {short_error(exc)}") from None
        return text, confidence

    # loading

    def _ensure_loaded(self, deadline: float) -> Any:
        """Called with the lock held."""
        if self._closed:
            raise OcrError("detector_error", "MangaOCR: engine closed")
        if self._ocr is not None:
            return self._ocr
        if self._failure is not None:
            error, failed_at = self._failure
            wait = self._load_retry_after - (time.monotonic() - failed_at)
            if wait > 0:
                raise OcrError(error.reason, f"{error.detail} (next load attempt in {wait:.0f}s)")
        try:
            self._ocr = self._load(deadline)
        except OcrError as exc:
            if exc.reason != "timeout":  # a busy gate is no reason to stop trying
                self._failure = (exc, time.monotonic())
                log.error("mangaocr: cannot load the model", model=self.model, error=exc.detail)
            raise
        self._failure = None
        return self._ocr

    def _load(self, deadline: float) -> Any:
        torch, manga_ocr_class = import_manga_ocr()
        device = resolve_device(self.device, torch)
        self.resolved_device = device
        if device == "cpu" and torch.backends.mkldnn.enabled and writable_code_forbidden():
            # oneDNN generates its CPU kernels at run time; here that fails ("could not create a
            # primitive"). PyTorch's own kernels need no generated code, and a ViT's one convolution
            # is a small share of the work.
            torch.backends.mkldnn.enabled = False
            log.info("mangaocr: oneDNN off: this process may not create executable memory")
        directory = model_dir(
            self.model, self._local, cache_dir=self._cache_dir, allow_download=self._allow_download
        )
        started = time.monotonic()
        with self._gate_slot(deadline), hub_offline(), on_cuda_device(torch, device):
            if device.startswith("cuda"):
                reason = check_gpu_memory(self._min_free_mib, torch.cuda.current_device())
                if reason is not None:
                    raise OcrError("detector_error", f"MangaOCR: not loading the model: {reason}")
            try:
                # MangaOcr moves the model to the current CUDA device unless force_cpu, and reads its
                # bundled example image once (a warm-up) before it returns.
                ocr = manga_ocr_class(str(directory), force_cpu=not device.startswith("cuda"))
            except Exception as exc:
                raise OcrError(
                    "detector_error", f"MangaOCR: cannot load the model from {directory}: {short_error(exc)}"
                ) from None
        self.load_seconds = time.monotonic() - started
        self.loads += 1
        log.info(
            "mangaocr: model loaded",
            model=self.model,
            directory=str(directory),
            device=device,
            seconds=round(self.load_seconds, 2),
        )
        return ocr

    # gate and lock

    @contextlib.contextmanager
    def _gate_slot(self, deadline: float) -> Iterator[None]:
        if not self.gated or self._gate is None:
            yield
            return
        try:
            held = self._gate.acquire(self._gate_resource, 1, max(0.0, deadline - time.monotonic()))
        except GateTimeout as exc:
            raise OcrError("timeout", f"MangaOCR: {exc}") from None
        except GateError as exc:
            raise OcrError("detector_error", f"MangaOCR: GPU gate unusable: {exc}") from None
        with held:
            yield

    @contextlib.contextmanager
    def _locked(self, deadline: float, why: str) -> Iterator[None]:
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise OcrError("timeout", f"MangaOCR: {why}")
        try:
            yield
        finally:
            self._lock.release()


def _crop(image: Image.Image, box: BBox) -> Image.Image:
    """The region as RGB, transparency laid on white (MangaOcr reads grey levels of RGB)."""
    from PIL import Image

    crop = image.crop(box)
    if crop.mode in ("RGBA", "LA", "PA") or (crop.mode == "P" and "transparency" in crop.info):
        rgba = crop.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        crop = Image.alpha_composite(background, rgba)
    return crop.convert("L").convert("RGB")


def _confidence(scores: Sequence[Any], tokens: Any, special: set[int]) -> float | None:
    """Geometric mean of the probabilities of the answer's text tokens (greedy decoding)."""
    import torch

    generated = tokens[-len(scores) :] if scores else tokens[:0]
    logs = [
        torch.log_softmax(step[0].float(), dim=-1)[int(token)].item()
        for step, token in zip(scores, generated, strict=True)
        if int(token) not in special
    ]
    if not logs:
        return None
    return round(math.exp(sum(logs) / len(logs)), 4)


def _area(box: BBox) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])
