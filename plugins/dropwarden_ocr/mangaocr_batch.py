"""MangaOCR in batches: crops of concurrent images read by one `generate`, each row with its own deadline.

A `Request` is one image's crops (already turned into pixel tensors by the caller's thread). The
`MicroBatcher`'s one thread collects crops from the requests waiting, at most `limit()` of them, waiting at
most `max_wait` seconds for more while some caller is still preparing its crops, and hands each batch to a
runner (the engine's, which holds the GPU gate once per batch). `read_batch` is what `MangaOcr.__call__`
does, for many crops at once: the same text post-processing, special tokens dropped, and a confidence per
row; a row whose deadline passes stops generating while the others go on.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from dropwarden_ocr.engine import OcrError

log = structlog.get_logger("dropwarden.ocr")

Reading = tuple[str, float | None]  # text, confidence


class Request:
    """One image's crops waiting to be read; settled crop by crop, or failed once as a whole."""

    def __init__(self, pixels: Sequence[Any], deadline: float):
        self.pixels = list(pixels)
        self.deadline = deadline
        self.readings: list[Reading | None] = [None] * len(self.pixels)
        self.error: OcrError | None = None
        self.done = threading.Event()
        self._left = len(self.pixels)
        self._lock = threading.Lock()
        if not self.pixels:
            self.done.set()

    @property
    def finished(self) -> bool:
        return self.done.is_set()

    @property
    def read(self) -> int:
        """How many of its crops have been read so far."""
        return len(self.pixels) - self._left

    def settle(self, index: int, reading: Reading) -> None:
        with self._lock:
            if self.done.is_set() or self.readings[index] is not None:
                return
            self.readings[index] = reading
            self._left -= 1
            if self._left == 0:
                self.done.set()

    def fail(self, error: OcrError) -> None:
        """The first failure wins; results that come later are dropped."""
        with self._lock:
            if self.done.is_set():
                return
            self.error = error
            self.done.set()


@dataclass(frozen=True)
class Crop:
    """One crop of one request, as it travels through a batch."""

    request: Request
    index: int

    @property
    def pixels(self) -> Any:
        return self.request.pixels[self.index]

    @property
    def deadline(self) -> float:
        return self.request.deadline


class MicroBatcher:
    """Feeds `run(batch)` with crops of the waiting requests, one batch at a time, from one thread."""

    def __init__(
        self,
        run: Callable[[list[Crop]], None],
        *,
        limit: Callable[[], int],
        max_wait: float,
        name: str = "mangaocr-batcher",
    ):
        self._run = run
        self._limit = limit
        self._max_wait = max_wait
        self._name = name
        self._queue: deque[Crop] = deque()
        self._cond = threading.Condition()
        self._preparing = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # batches run so far
        self.largest = 0  # the most crops in one batch so far

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Around a caller's cropping: while any caller is inside, a batch waits (max_wait) to fill."""
        with self._cond:
            self._preparing += 1
        try:
            yield
        finally:
            with self._cond:
                self._preparing -= 1
                self._cond.notify_all()

    def submit(self, request: Request) -> None:
        with self._cond:
            if self._closed:
                raise OcrError("detector_error", "MangaOCR: engine closed")
            self._queue.extend(Crop(request, index) for index in range(len(request.pixels)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the thread once its batch is done; requests still queued fail."""
        with self._cond:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        for crop in queued:
            crop.request.fail(OcrError("detector_error", "MangaOCR: engine closed"))
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if not batch:
                continue
            self.batches += 1
            self.largest = max(self.largest, len(batch))
            try:
                self._run(batch)
            except Exception as exc:  # the runner should fail requests itself; never let the thread die
                log.error("mangaocr: a batch failed", error=f"{type(exc).__name__}: {exc}"[:300])
                for crop in batch:
                    crop.request.fail(OcrError("detector_error", f"MangaOCR failed: {type(exc).__name__}"))

    def _next_batch(self) -> list[Crop] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            limit = max(1, self._limit())
            fill_until = time.monotonic() + self._max_wait
            while len(self._live()) < limit and self._preparing and not self._closed:
                remaining = fill_until - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[Crop] = []
            while self._queue and len(batch) < limit:
                crop = self._queue.popleft()
                if not crop.request.finished:  # failed or timed out while queued: not read at all
                    batch.append(crop)
            return batch

    def _live(self) -> list[Crop]:
        return [crop for crop in self._queue if not crop.request.finished]


class RowDeadlines:
    """A `StoppingCriteria` (duck-typed): each row of the batch stops once its own deadline has passed."""

    def __init__(self, deadlines: Sequence[float]):
        self._deadlines = list(deadlines)
        self._first = min(self._deadlines)
        self._none_done: Any = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        now = time.monotonic()
        if now < self._first:
            if self._none_done is None:
                self._none_done = torch.zeros(len(self._deadlines), dtype=torch.bool, device=input_ids.device)
            return self._none_done
        return torch.tensor([now >= d for d in self._deadlines], dtype=torch.bool, device=input_ids.device)


class GreyPixels:
    """What a ViT image processor does to a grey crop, split in two: the resize on the caller's thread (one
    8-bit channel, in Pillow, as the processor resizes), rescaling and normalising on the model's device
    for a whole batch. A fraction of the processor's CPU time, and a twelfth of the bytes to copy."""

    _PROCESSORS = ("ViTImageProcessor", "ViTImageProcessorPil", "ViTImageProcessorFast")

    def __init__(self, size: tuple[int, int], resample: int, scale: float, mean: Sequence, std: Sequence):
        self.size = size  # (width, height)
        self.resample = resample
        self.scale = scale
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    @classmethod
    def of(cls, processor: Any) -> GreyPixels | None:
        """For a processor whose steps are resize, rescale, normalise (MangaOCR's); else None."""
        try:
            if type(processor).__name__ not in cls._PROCESSORS:
                return None
            size = processor.size
            if not (processor.do_resize and processor.do_rescale and processor.do_normalize):
                return None
            mean, std = list(processor.image_mean), list(processor.image_std)
            if len(mean) != 3 or len(std) != 3 or getattr(processor, "do_convert_rgb", None) is False:
                return None
            return cls(
                (int(size["width"]), int(size["height"])),
                int(processor.resample),
                processor.rescale_factor,
                mean,
                std,
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            return None

    def resize(self, grey: Any) -> Any:
        """An 8-bit grey PIL image -> a (height, width) uint8 tensor of the model's input size."""
        import numpy as np
        import torch

        return torch.from_numpy(np.asarray(grey.resize(self.size, self.resample), dtype=np.uint8).copy())

    def normalise(self, batch: Any, dtype: Any) -> Any:
        """(batch, height, width) uint8 -> (batch, 3, height, width) model input, where `batch` is."""
        import torch

        values = batch.float().mul_(self.scale).unsqueeze(1).expand(-1, 3, -1, -1)
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return ((values - mean) / std).to(dtype)


def read_batch(
    ocr: Any,
    pixels: Sequence[Any],
    deadlines: Sequence[float],
    max_tokens: int,
    grey: GreyPixels | None = None,
) -> list[Reading]:
    """Read a batch of crops (pixel tensors from `ocr.processor`, or from `grey.resize`) with `ocr.model` as
    MangaOcr reads one: greedy generation up to `max_tokens`, decoded without special tokens, MangaOcr's
    `post_process`. Raises what torch raises (torch.OutOfMemoryError included)."""
    import torch
    from manga_ocr.ocr import post_process
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Criterion(RowDeadlines, StoppingCriteria):
        pass

    model = ocr.model
    if grey is not None and pixels[0].dtype == torch.uint8:
        batch = grey.normalise(torch.stack(list(pixels)).to(model.device), model.dtype)
    else:
        batch = torch.stack(list(pixels)).to(model.device, dtype=model.dtype)
    with torch.inference_mode():
        out = model.generate(
            batch,
            max_length=max_tokens,
            stopping_criteria=StoppingCriteriaList([_Criterion(deadlines)]),
            output_scores=True,
            return_dict_in_generate=True,
        )
        special = torch.tensor(sorted(set(ocr.tokenizer.all_special_ids)), device=out.sequences.device)
        confidences = _confidences(out.scores, out.sequences, special)
    sequences = out.sequences.cpu()
    texts = [post_process(ocr.tokenizer.decode(row, skip_special_tokens=True)) for row in sequences]
    return list(zip(texts, confidences, strict=True))


def _confidences(scores: Sequence[Any], sequences: Any, special: Any) -> list[float | None]:
    """Per row: the geometric mean of the probabilities of its text tokens (greedy decoding)."""
    import torch

    rows = sequences.shape[0]
    if not scores:
        return [None] * rows
    generated = sequences[:, -len(scores) :]
    chosen = torch.stack(
        [
            step.float().gather(1, generated[:, i : i + 1]).squeeze(1) - torch.logsumexp(step.float(), dim=-1)
            for i, step in enumerate(scores)
        ],
        dim=1,
    ).double()
    text = ~torch.isin(generated, special)
    counts = text.sum(dim=1).tolist()
    sums = torch.where(text, chosen, torch.zeros_like(chosen)).sum(dim=1).tolist()
    return [None if n == 0 else round(math.exp(s / n), 4) for s, n in zip(sums, counts, strict=True)]


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory error, or a CUDA library's failure to allocate (cuBLAS, cuDNN)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "ALLOC_FAILED" in text)
