"""The MangaOCR engine: finds text regions on a page, crops each one and reads it with `manga_ocr.MangaOcr`.

MangaOCR (a ViT encoder + BERT decoder, `kha-white/manga-ocr-base`) reads one block of Japanese text per
call, horizontal or vertical, so a page is first cut into regions by a region finder (Tesseract's layout
analysis, from `dropwarden_ocr`); without one the whole image is one region, which suits images of a
single speech bubble or line and little else.

The model is loaded lazily, once, under a lock (`warm_up()` loads it before the daemon is ready) and always
from a local directory with the Hugging Face hub switched offline: a hub name is first resolved in the
local Hugging Face cache and downloaded only when `allow_download` says so. A failed load is remembered
and retried only after `load_retry_after` seconds, so a broken model costs one clear error per image, not
one load per image. On CUDA the model runs in fp16.

Reading is batched (mangaocr_batch.py): each caller crops its image's regions and turns them into pixels on
its own thread, then one thread reads the crops of all waiting images in batches of at most `max_batch`
(waiting at most `max_wait` seconds for a batch to fill while other images are being cropped), each row
stopping at its own image's deadline. When the GPU runs out of memory, at load or mid-batch, batches are
halved and retried (the smaller limit stays for a while), a crop that fails alone is read by a CPU copy of
the model (`cpu_fallback`; at load: the engine moves to the CPU), else its image is `unscanned`.

The GPU gate: work on a CUDA device (the load, which uploads the weights, and each batch) holds one slot
of `gate_resource` for its duration; CPU work does not, since it shares no accelerator
(`use_gate=True` gates it anyway). Needs the `mangaocr` extra (manga-ocr, torch, transformers); without it
the engine still constructs, and loading fails with a message that names the extra. Loading turns
transformers' own logging down to errors and its progress bars off, process-wide, and silences
manga_ocr's loguru lines: the engine logs the load itself. Where the model comes from and the device it runs
on: mangaocr_model.py.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from dropwarden.gate import GateError, GateTimeout, check_gpu_memory
from dropwarden_ocr.engine import BBox, OcrError, OcrRegion, short_error
from dropwarden_ocr.mangaocr_batch import (
    Crop,
    GreyPixels,
    MicroBatcher,
    Reading,
    Request,
    is_out_of_memory,
)
from dropwarden_ocr.mangaocr_memory import BatchReader, deliver, free_cuda
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
        max_batch: int = 32,
        max_wait: float = 0.005,
        cpu_fallback: bool = True,
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
        max_batch: at most this many crops (of one or several images) are read by one `generate`.
        max_wait: seconds a batch waits to fill while other images are being cropped (0: never).
        cpu_fallback: when the GPU runs out of memory even for one crop (or at load), read on the CPU.
        """
        if not _DEVICE.fullmatch(device):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', not {device!r}")
        for key, value, least in (
            ("max_regions", max_regions, 1),
            ("min_region_size", min_region_size, 1),
            ("padding", padding, 0),
            ("max_tokens", max_tokens, 2),
            ("max_batch", max_batch, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{key} must be an integer of at least {least}, not {value!r}")
        if not 0 <= max_wait <= 1:
            raise ValueError(f"max_wait must be between 0 and 1 second, not {max_wait!r}")
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
        self._lock = threading.Lock()  # one load at a time
        self._ocr: Any = None  # manga_ocr.MangaOcr once loaded
        self._cpu_fallback = cpu_fallback
        self._directory: Path | None = None
        self.max_wait = max_wait
        self.cpu_fallback = cpu_fallback
        self._reader = BatchReader(
            max_batch=max_batch,
            max_tokens=max_tokens,
            cpu_fallback=cpu_fallback,
            grey=self._grey,
            load_cpu_copy=self._load_cpu_copy,
        )
        self._waiting_for_gate = False
        self._fast_pixels = True
        self._grey_of: dict[int, GreyPixels | None] = {}
        self._batcher = MicroBatcher(
            self._run_batch, limit=lambda: self._reader.batch_limit, max_wait=max_wait
        )
        self._failure: tuple[OcrError, float] | None = None
        self._closed = False
        self.resolved_device: str | None = None
        self.loads = 0  # how many times a model was loaded: 0, then 1
        self.load_seconds: float | None = None

    @property
    def max_batch(self) -> int:
        return self._reader.max_batch

    @property
    def batch_limit(self) -> int:
        """The largest batch read now: `max_batch`, halved while the GPU runs out of memory."""
        return self._reader.batch_limit

    @property
    def cpu_fallback_loads(self) -> int:
        """CPU copies of the model loaded because the GPU ran out of memory (0 or 1)."""
        return self._reader.cpu_fallback_loads

    def set_max_batch(self, size: int) -> None:
        """Read at most `size` crops per batch from now on (the benchmark's sweep)."""
        self._reader.max_batch = self._reader.batch_limit = size

    # OcrEngine

    def recognise(self, image: Image.Image, deadline: float) -> list[OcrRegion]:
        """Find the regions, crop them, then have them read in a batch; raises OcrError (timeout,
        detector_error) instead of returning partial results. Blocking: call it from a worker thread."""
        plan = self._plan(image, self._regions(image, deadline))
        if not plan:
            return []
        with self._locked(deadline, "busy loading the model"):
            ocr = self._ensure_loaded(deadline)
        with self._batcher.preparing():
            request = Request(self._prepare(ocr, image, plan, deadline), deadline)
            self._batcher.submit(request)
        if not request.done.wait(max(0.0, deadline - time.monotonic())):
            why = (
                f"waiting for GPU gate resource {self._gate_resource!r}" if self._waiting_for_gate else "busy"
            )
            detail = f"MangaOCR: {why}; the deadline passed with {request.read} of {len(plan)} regions read"
            request.fail(OcrError("timeout", detail))
        if request.error is not None:
            raise OcrError(request.error.reason, request.error.detail)
        regions: list[OcrRegion] = []
        for (box, _crop_box), reading in zip(plan, request.readings, strict=True):
            text, confidence = reading or ("", None)
            if text:
                vertical = (box[3] - box[1]) > VERTICAL_ASPECT * (box[2] - box[0])
                regions.append(OcrRegion(text, box, confidence, vertical))
        return regions

    # daemon hooks

    def warm_up(self) -> None:
        """Load the model now (the daemon calls this before READY=1); raises OcrError on failure."""
        deadline = time.monotonic() + self._load_timeout
        with self._locked(deadline, "busy past load_timeout"):
            self._ensure_loaded(deadline)

    def close(self) -> None:
        """Drop the model (and free CUDA memory); idempotent. Later calls raise OcrError."""
        self._batcher.close()
        with self._lock:
            self._closed = True
            ocr, self._ocr = self._ocr, None
        self._reader.drop_cpu_copy()
        if ocr is not None and (self.resolved_device or "").startswith("cuda"):
            del ocr
            free_cuda()

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

    def _prepare(self, ocr: Any, image: Image.Image, plan: list[tuple[BBox, BBox]], deadline: float) -> list:
        """The crops as the model's pixel tensors, made on the caller's thread (in parallel with others)."""
        pixels = []
        for index, (_box, crop_box) in enumerate(plan):
            if time.monotonic() >= deadline:
                raise OcrError(
                    "timeout", f"MangaOCR: deadline passed with {index} of {len(plan)} regions prepared"
                )
            try:
                grey = self._grey(ocr)
                if grey is not None:  # the processor's steps, cheaper: see GreyPixels
                    pixels.append(grey.resize(_crop(image, crop_box, "L")))
                    continue
                values = ocr.processor(_crop(image, crop_box), return_tensors="pt").pixel_values[0]
                pixels.append(values.to(ocr.model.dtype))  # fp16 on CUDA: half the bytes to copy over
            except Exception as exc:
                raise OcrError("detector_error", f"MangaOCR failed: {short_error(exc)}") from None
            if time.monotonic() >= deadline:
                raise OcrError(
                    "timeout", f"MangaOCR: deadline passed while preparing region {index + 1} of {len(plan)}"
                )
        return pixels

    def _grey(self, ocr: Any) -> GreyPixels | None:
        """The fast preprocessing for this model's image processor, when it is one GreyPixels knows."""
        key = id(ocr.processor)
        if key not in self._grey_of:
            self._grey_of[key] = GreyPixels.of(ocr.processor) if self._fast_pixels else None
        return self._grey_of[key]

    def _run_batch(self, batch: list[Crop]) -> None:
        """The batcher's runner: read `batch` under one gate slot, halving on out-of-memory; every crop's
        request is settled or failed when it returns."""
        ocr = self._ocr
        if ocr is None:
            for crop in batch:
                crop.request.fail(OcrError("detector_error", "MangaOCR: engine closed"))
            return
        outcomes: list[tuple[Crop, Reading | OcrError]] = []
        self._waiting_for_gate = self.gated
        try:
            with self._gate_slot(max(crop.deadline for crop in batch)):
                self._waiting_for_gate = False
                alone = self._reader.read(ocr, batch, outcomes)
        except OcrError as exc:
            self._waiting_for_gate = False
            for crop in batch:
                crop.request.fail(exc)
            return
        deliver(outcomes)  # once the slot is given back: a caller that returns finds the gate free
        if alone:
            self._reader.read_on_cpu(alone)

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
        self._directory = model_dir(
            self.model, self._local, cache_dir=self._cache_dir, allow_download=self._allow_download
        )
        started = time.monotonic()
        with self._gate_slot(deadline), on_cuda_device(torch, device):
            if device.startswith("cuda"):
                reason = check_gpu_memory(self._min_free_mib, torch.cuda.current_device())
                if reason is not None:
                    raise OcrError("detector_error", f"MangaOCR: not loading the model: {reason}")
            ocr = self._construct(torch, manga_ocr_class, device)
        if ocr is None:
            free_cuda()
            if not self._cpu_fallback:
                raise OcrError(
                    "detector_error",
                    "MangaOCR: the GPU ran out of memory loading the model (cpu_fallback is off)",
                )
            log.warning("mangaocr: the GPU ran out of memory loading the model; running on the CPU")
            self.resolved_device = device = "cpu"
            ocr = self._construct(torch, manga_ocr_class, "cpu")
        self.load_seconds = time.monotonic() - started
        self.loads += 1
        log.info(
            "mangaocr: model loaded",
            model=self.model,
            directory=str(self._directory),
            device=device,
            seconds=round(self.load_seconds, 2),
        )
        return ocr

    def _load_cpu_copy(self) -> Any:
        """A second copy of the model on the CPU, for what the GPU has no memory for."""
        torch, manga_ocr_class = import_manga_ocr()
        return self._construct(torch, manga_ocr_class, "cpu")

    def _construct(self, torch: Any, manga_ocr_class: Any, device: str) -> Any:
        """MangaOcr loaded from the model directory on `device`, in fp16 on CUDA; None when the GPU ran
        out of memory."""
        cuda = device.startswith("cuda")
        if not cuda and torch.backends.mkldnn.enabled and writable_code_forbidden():
            # oneDNN generates its CPU kernels at run time; here that fails ("could not create a
            # primitive"). PyTorch's own kernels need no generated code, and a ViT's one convolution
            # is a small share of the work.
            torch.backends.mkldnn.enabled = False
            log.info("mangaocr: oneDNN off: this process may not create executable memory")
        out_of_memory = False
        with hub_offline():
            try:
                # MangaOcr moves the model to the current CUDA device unless force_cpu, and reads its
                # bundled example image once (a warm-up) before it returns.
                ocr = manga_ocr_class(str(self._directory), force_cpu=not cuda)
                if cuda:
                    ocr.model.half()
            except Exception as exc:
                if not (cuda and is_out_of_memory(exc)):
                    raise OcrError(
                        "detector_error",
                        f"MangaOCR: cannot load the model from {self._directory}: {short_error(exc)}",
                    ) from None
                out_of_memory = True
        return None if out_of_memory else ocr

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


def _crop(image: Image.Image, box: BBox, mode: str = "RGB") -> Image.Image:
    """The region in grey levels as RGB (or "L"), transparency laid on white (MangaOcr reads grey levels)."""
    from PIL import Image

    crop = image.crop(box)
    if crop.mode in ("RGBA", "LA", "PA") or (crop.mode == "P" and "transparency" in crop.info):
        rgba = crop.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        crop = Image.alpha_composite(background, rgba)
    grey = crop.convert("L")
    return grey if mode == "L" else grey.convert("RGB")


def _area(box: BBox) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])
