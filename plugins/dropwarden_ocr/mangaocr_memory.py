"""MangaOCR's answer to a GPU out of memory: halve the batch, then read alone, then on a CPU copy."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from dropwarden_ocr.engine import OcrError, short_error
from dropwarden_ocr.mangaocr_batch import Crop, GreyPixels, Reading, is_out_of_memory, read_batch

log = structlog.get_logger("dropwarden.ocr")

RECOVER_AFTER = 50  # batches without running out of memory before a halved batch limit doubles again

Outcomes = list[tuple[Crop, Reading | OcrError]]


class BatchReader:
    """Reads batches of crops with a model, sized to the memory there is.

    A part that runs out of memory is split in halves and `batch_limit` shrinks with it, to double again
    after RECOVER_AFTER clean batches; a crop that fails alone goes to a CPU copy of the model (made once
    by `load_cpu_copy`, when `cpu_fallback` is on), else its image fails.
    """

    def __init__(
        self,
        *,
        max_batch: int,
        max_tokens: int,
        cpu_fallback: bool,
        grey: Callable[[Any], GreyPixels | None],
        load_cpu_copy: Callable[[], Any],
    ) -> None:
        self.max_batch = max_batch
        self.batch_limit = max_batch
        self.cpu_fallback = cpu_fallback
        self.cpu_fallback_loads = 0  # CPU copies loaded because the GPU ran out of memory
        self._max_tokens = max_tokens
        self._grey = grey
        self._load_cpu_copy = load_cpu_copy
        self._cpu_lock = threading.Lock()
        self._cpu_ocr: Any = None
        self._clean_batches = 0

    def read(self, ocr: Any, crops: list[Crop], outcomes: Outcomes) -> list[Crop]:
        """Read `crops` with `ocr`, splitting a part in halves whenever it runs out of memory; outcomes are
        added to `outcomes`, and the crops that ran out of memory alone are returned."""
        parts, alone = [crops], []
        while parts:
            part = [crop for crop in parts.pop(0) if not crop.request.finished]
            if len(part) > self.batch_limit:  # the limit shrank since this batch was formed
                parts[:0] = [part[i : i + self.batch_limit] for i in range(0, len(part), self.batch_limit)]
                continue
            if not part or self._read_part(ocr, part, outcomes):
                continue
            if len(part) == 1:
                alone.append(part[0])
                continue
            half = len(part) // 2
            self._shrink(half)
            parts[:0] = [part[:half], part[half:]]
        return alone

    def read_on_cpu(self, crops: list[Crop]) -> None:
        """Crops the GPU had no memory for even alone: the CPU copy reads them, or their images fail."""
        crops = [crop for crop in crops if not crop.request.finished]
        if not crops:
            return
        if not self.cpu_fallback:
            error = OcrError(
                "detector_error", "MangaOCR: out of memory reading one region (cpu_fallback is off)"
            )
            for crop in crops:
                crop.request.fail(error)
            return
        try:
            cpu = self._cpu_copy()
        except OcrError as exc:
            for crop in crops:
                crop.request.fail(exc)
            return
        outcomes: Outcomes = []
        alone = self.read(cpu, crops, outcomes)
        deliver(outcomes)
        for crop in alone:
            crop.request.fail(OcrError("detector_error", "MangaOCR: out of memory reading one region"))

    def drop_cpu_copy(self) -> None:
        with self._cpu_lock:
            self._cpu_ocr = None

    def _read_part(self, ocr: Any, part: list[Crop], outcomes: Outcomes) -> bool:
        """One `generate` over `part`, its outcomes added to `outcomes`; False when it ran out of memory."""
        out_of_memory = False
        try:
            pixels, deadlines = [c.pixels for c in part], [c.deadline for c in part]
            readings = read_batch(ocr, pixels, deadlines, self._max_tokens, self._grey(ocr))
        except Exception as exc:  # RuntimeError from torch, …
            if not is_out_of_memory(exc):
                error = OcrError("detector_error", f"MangaOCR failed: {short_error(exc)}")
                outcomes.extend((crop, error) for crop in part)
                return True
            out_of_memory = True
        if out_of_memory:  # outside the except block: its traceback no longer holds the batch's tensors
            log.warning(
                "mangaocr: out of memory reading a batch", crops=len(part), device=str(ocr.model.device)
            )
            free_cuda()
            return False
        now = time.monotonic()
        for crop, reading in zip(part, readings, strict=True):
            if now >= crop.deadline:  # its row stopped at the deadline: the text may be cut short
                total = len(crop.request.pixels)
                detail = f"MangaOCR: deadline passed while reading region {crop.index + 1} of {total}"
                outcomes.append((crop, OcrError("timeout", detail)))
            else:
                outcomes.append((crop, reading))
        self._batch_done()
        return True

    def _cpu_copy(self) -> Any:
        """The model loaded a second time, on the CPU, once."""
        with self._cpu_lock:
            if self._cpu_ocr is None:
                log.warning("mangaocr: the GPU has no memory even for one region; loading a CPU copy")
                self._cpu_ocr = self._load_cpu_copy()
                self.cpu_fallback_loads += 1
            return self._cpu_ocr

    def _shrink(self, size: int) -> None:
        if size < self.batch_limit:
            log.warning("mangaocr: batches halved after running out of memory", batch_limit=size)
            self.batch_limit = max(1, size)
        self._clean_batches = 0

    def _batch_done(self) -> None:
        self._clean_batches += 1
        if self._clean_batches >= RECOVER_AFTER and self.batch_limit < self.max_batch:
            self.batch_limit = min(self.max_batch, self.batch_limit * 2)
            self._clean_batches = 0


def deliver(outcomes: Outcomes) -> None:
    """Settle or fail each crop's request with its outcome."""
    for crop, outcome in outcomes:
        if isinstance(outcome, OcrError):
            crop.request.fail(outcome)
        else:
            crop.request.settle(crop.index, outcome)


def free_cuda() -> None:
    """Give cached CUDA memory back (a no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
