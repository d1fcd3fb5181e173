"""MangaOCR's answer to a GPU out of memory: halve the batch, then read alone, then on a CPU copy."""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog

from dropwarden_ocr.engine import OcrError, short_error
from dropwarden_ocr.mangaocr_batch import Crop, GreyPixels, Reading, is_out_of_memory, read_batch
from dropwarden_ocr.mangaocr_model import import_manga_ocr

log = structlog.get_logger("dropwarden.ocr")

RECOVER_AFTER = 50  # batches without running out of memory before a halved batch limit doubles again


class MemoryRecovery:
    """The engine's batch reading under memory pressure (mixed into `MangaOcrEngine`, which owns the state).

    A part that runs out of memory is split in halves and the engine's `batch_limit` shrinks with it, to
    double again after RECOVER_AFTER clean batches; a crop that fails alone goes to a CPU copy of the model
    (`cpu_fallback`), else its image fails.
    """

    batch_limit: int
    max_batch: int
    cpu_fallback_loads: int
    _max_tokens: int
    _cpu_fallback: bool
    _cpu_lock: threading.Lock
    _cpu_ocr: Any
    _clean_batches: int

    def _grey(self, ocr: Any) -> GreyPixels | None:
        raise NotImplementedError

    def _construct(self, torch: Any, manga_ocr_class: Any, device: str) -> Any:
        raise NotImplementedError

    def _read_halving(
        self, ocr: Any, crops: list[Crop], outcomes: list[tuple[Crop, Reading | OcrError]]
    ) -> list[Crop]:
        """Read `crops`, splitting a part in halves whenever it runs out of memory; the crops that ran out
        of memory alone are returned."""
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

    def _read_part(self, ocr: Any, part: list[Crop], outcomes: list[tuple[Crop, Reading | OcrError]]) -> bool:
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
            self._free_cuda()
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

    def _read_on_cpu(self, crops: list[Crop]) -> None:
        """Crops the GPU had no memory for even alone: the CPU copy reads them, or their images fail."""
        crops = [crop for crop in crops if not crop.request.finished]
        if not crops:
            return
        if not self._cpu_fallback:
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
        outcomes: list[tuple[Crop, Reading | OcrError]] = []
        alone = self._read_halving(cpu, crops, outcomes)
        deliver(outcomes)
        for crop in alone:
            crop.request.fail(OcrError("detector_error", "MangaOCR: out of memory reading one region"))

    def _cpu_copy(self) -> Any:
        """The model loaded a second time, on the CPU, once."""
        with self._cpu_lock:
            if self._cpu_ocr is None:
                torch, manga_ocr_class = import_manga_ocr()
                log.warning("mangaocr: the GPU has no memory even for one region; loading a CPU copy")
                self._cpu_ocr = self._construct(torch, manga_ocr_class, "cpu")
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

    def _free_cuda(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def deliver(outcomes: list[tuple[Crop, Reading | OcrError]]) -> None:
    for crop, outcome in outcomes:
        if isinstance(outcome, OcrError):
            crop.request.fail(outcome)
        else:
            crop.request.settle(crop.index, outcome)
