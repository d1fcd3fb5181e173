"""MangaOCR in batches: the regions of an image, and of images read at the same time, go through one
`generate`; each image keeps its own deadline; the GPU running out of memory means smaller batches, then
the CPU, then `unscanned`, never a crash and never a clean verdict.

The models are the tests' tiny random ones (tiny_mangaocr.py): "short" always reads `OUTPUT_CHAR`; "noise"
reads characters that depend on the image, so text read in a batch can be compared with text read alone.
Out of memory is simulated on the CPU by a `generate` that raises torch's own out-of-memory error above a
batch size; on a GPU (the last test, skipped without CUDA) it is real, under a per-process memory cap.
"""

# ruff: noqa: F811

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dropwarden_ocr.engine import OcrError
from dropwarden_ocr.mangaocr import MangaOcrEngine
from dropwarden_ocr.mangaocr_batch import RowDeadlines

# the fixtures of test_ocr_mangaocr.py, shared: the tiny model, counted loads, no network
from .test_ocr_mangaocr import SOON, _finder, _require_manga_ocr, loads, no_network, tiny_model  # noqa: F401
from .tiny_mangaocr import OUTPUT_CHAR, REAL_SIZE, write_mangaocr

TOKENS = 12  # answers of the "noise" model are cut at this length (decoder start token included)


@pytest.fixture(scope="module")
def noise_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_manga_ocr()
    return write_mangaocr(tmp_path_factory.mktemp("noise-mangaocr"), output="noise")


def _textured_page(boxes: list[tuple[int, int, int, int]], seed: int = 0) -> Image.Image:
    """A white page with a different random texture inside each box."""
    rng = np.random.default_rng(seed)
    page = Image.new("RGB", (640, 480), "white")
    for box in boxes:
        size = (box[2] - box[0], box[3] - box[1])
        page.paste(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)), box[:2])
    return page


BOXES = [(10, 10, 110, 40), (150, 10, 190, 200), (220, 30, 420, 90), (20, 250, 60, 460), (300, 300, 620, 340)]
BOXES += [(450, 120, 600, 260)]


def _alone(ocr, crop: Image.Image, max_length: int) -> str:
    """What `MangaOcr.__call__` does with one crop (its length limit aside)."""
    import torch
    from manga_ocr.ocr import post_process

    pixels = ocr.processor(crop.convert("L").convert("RGB"), return_tensors="pt").pixel_values
    with torch.inference_mode():
        tokens = ocr.model.generate(pixels, max_length=max_length)[0]
    return post_process(ocr.tokenizer.decode(tokens, skip_special_tokens=True))


class FailsAbove:
    """A model's `generate` that runs out of memory (torch's own error) for batches of more than `most`."""

    def __init__(self, generate, most: int):
        self.generate = generate
        self.most = most
        self.attempts: list[int] = []

    def __call__(self, pixel_values, *args, **kwargs):
        import torch

        self.attempts.append(int(pixel_values.shape[0]))
        if pixel_values.shape[0] > self.most:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.generate(pixel_values, *args, **kwargs)


# batches


def test_regions_read_in_a_batch_read_the_same_text_as_one_at_a_time(noise_model: Path, loads: list) -> None:
    page = _textured_page(BOXES)
    finder = _finder(BOXES)
    alone = MangaOcrEngine(noise_model, device="cpu", find_regions=finder, max_batch=1, max_tokens=TOKENS)
    batched = MangaOcrEngine(noise_model, device="cpu", find_regions=finder, max_batch=4, max_tokens=TOKENS)
    one_by_one = alone.recognise(page, time.monotonic() + SOON)
    together = batched.recognise(page, time.monotonic() + SOON)

    assert loads[0].model.generate.batches == [1] * len(BOXES)
    assert loads[1].model.generate.batches == [4, 2]  # at most max_batch regions per generate
    assert [r.bbox for r in together] == [r.bbox for r in one_by_one] == BOXES
    assert [r.text for r in together] == [r.text for r in one_by_one]
    assert len({r.text for r in together}) > 1  # what is read depends on the crop
    assert all(0 < r.confidence <= 1 for r in together)
    assert [r.confidence for r in together] == pytest.approx([r.confidence for r in one_by_one], abs=2e-3)
    # what MangaOcr itself reads from each (padded) crop, one call each
    padded = [(b[0] - 4, b[1] - 4, b[2] + 4, b[3] + 4) for b in BOXES]
    assert [_alone(loads[0], page.crop(box), TOKENS) for box in padded] == [r.text for r in together]


def test_the_ocr_plugin_builds_the_engine_with_the_batch_settings(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from dropwarden.configload import load_config
    from dropwarden_ocr import _mangaocr

    config = tmp_path / "dropwarden.toml"
    config.write_text(
        '[ocr.mangaocr]\ndevice = "cpu"\nmax_batch = 12\nmax_wait_ms = 7.5\ncpu_fallback = false\n'
    )
    engine = _mangaocr(load_config(config, environ={}).settings, SimpleNamespace(find_regions=None))
    assert (engine.max_batch, engine.max_wait, engine.cpu_fallback) == (12, 0.0075, False)
    (tmp_path / "empty.toml").write_text("")
    default = _mangaocr(
        load_config(tmp_path / "empty.toml", environ={}).settings, SimpleNamespace(find_regions=None)
    )
    assert (default.max_batch, default.max_wait, default.cpu_fallback) == (32, 0.005, True)


def test_grey_crops_are_prepared_as_the_image_processor_prepares_them(noise_model: Path) -> None:
    """The engine resizes grey crops itself and normalises them on the model's device (GreyPixels): the
    same input as MangaOCR's own image processor gives, so the same text."""
    import manga_ocr
    import torch

    from dropwarden_ocr.mangaocr_batch import GreyPixels

    reference = manga_ocr.MangaOcr(str(noise_model), force_cpu=True)
    grey = GreyPixels.of(reference.processor)
    assert grey is not None
    exact = type(reference.processor).__name__ == "ViTImageProcessorPil"  # torchvision's resize differs a bit
    rng = np.random.default_rng(3)
    for shape in [(30, 80), (300, 60), (7, 500), (224, 224)]:
        crop = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), "L")
        want = reference.processor(crop.convert("RGB"), return_tensors="pt").pixel_values
        got = grey.normalise(grey.resize(crop)[None], torch.float32)
        assert got.shape == want.shape
        if exact:
            assert (got - want).abs().max().item() < 1e-5
        else:
            assert (got - want).abs().mean().item() < 0.05

    page = _textured_page(BOXES)
    engine = MangaOcrEngine(noise_model, device="cpu", find_regions=_finder(BOXES), max_tokens=TOKENS)
    regions = engine.recognise(page, time.monotonic() + SOON)
    padded = [(b[0] - 4, b[1] - 4, b[2] + 4, b[3] + 4) for b in BOXES]
    if exact:
        assert [r.text for r in regions] == [_alone(reference, page.crop(box), TOKENS) for box in padded]
    assert [r.bbox for r in regions] == BOXES
    assert GreyPixels.of(object()) is None  # any other processor: the processor itself is called


def _by_width(image: Image.Image, deadline: float) -> list[tuple[int, int, int, int]]:
    """Three regions whose place depends on the image's width: each worker's images have their own."""
    offset = image.width - 100
    return [(offset + 20 * i, 5, offset + 20 * i + 15, 25) for i in range(3)]


def test_images_read_at_the_same_time_share_batches(tiny_model: Path, loads: list) -> None:
    engine = MangaOcrEngine(tiny_model, device="cpu", find_regions=_by_width, max_batch=8, max_wait=0.05)
    engine.warm_up()
    generations = loads[0].model.generate
    generations.on_call = lambda _count: time.sleep(0.05)  # a batch takes a while: others queue meanwhile
    workers, images = 6, 2
    start = threading.Barrier(workers)
    results: dict[int, list] = {n: [] for n in range(workers)}
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        image = Image.new("RGB", (100 + 10 * number, 40), "white")
        start.wait()
        try:
            for _ in range(images):
                results[number].append(engine.recognise(image, time.monotonic() + SOON))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    for number in range(workers):
        want = _by_width(Image.new("RGB", (100 + 10 * number, 40)), 0)
        assert [[r.bbox for r in read] for read in results[number]] == [want] * images
        assert all(r.text == OUTPUT_CHAR for read in results[number] for r in read)
    assert sum(generations.batches) == workers * images * 3
    assert max(generations.batches) > 3  # regions of several images in one generate
    assert max(generations.batches) <= 8


# deadlines


def test_an_image_past_its_deadline_does_not_hold_up_the_others(noise_model: Path, loads: list) -> None:
    page = _textured_page(BOXES[:2])
    engine = MangaOcrEngine(
        noise_model, device="cpu", find_regions=_finder(BOXES[:2]), max_tokens=TOKENS, max_wait=0.2
    )
    engine.warm_up()
    generations = loads[0].model.generate
    generations.on_call = lambda count: time.sleep(0.6 if count == 1 else 0)  # the first batch is slow
    start = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def read(name: str, patience: float) -> None:
        start.wait()
        began = time.monotonic()
        try:
            outcome[name] = engine.recognise(page, began + patience)
        except OcrError as exc:
            outcome[name] = exc
        outcome[name + " took"] = time.monotonic() - began

    threads = [threading.Thread(target=read, args=args) for args in (("hasty", 0.25), ("patient", SOON))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    hasty = outcome["hasty"]
    assert isinstance(hasty, OcrError) and hasty.reason == "timeout"
    assert outcome["hasty took"] < 0.5  # it returned at its deadline, not when the slow batch ended
    patient = outcome["patient"]
    assert not isinstance(patient, OcrError)
    padded = [(b[0] - 4, b[1] - 4, b[2] + 4, b[3] + 4) for b in BOXES[:2]]
    assert [r.text for r in patient] == [_alone(loads[0], page.crop(box), TOKENS) for box in padded]


def test_each_row_of_a_batch_stops_at_its_own_deadline() -> None:
    import torch

    now = time.monotonic()
    ids = torch.zeros((3, 4), dtype=torch.long)
    assert RowDeadlines([now + 60, now + 60, now + 60])(ids, None).tolist() == [False, False, False]
    assert RowDeadlines([now - 1, now + 60, now - 0.1])(ids, None).tolist() == [True, False, True]


# out of memory


def test_out_of_memory_halves_the_batch_until_it_fits(tiny_model: Path, loads: list) -> None:
    boxes = [(20 * i, 0, 20 * i + 16, 16) for i in range(8)]
    engine = MangaOcrEngine(tiny_model, device="cpu", find_regions=_finder(boxes), max_batch=8, padding=0)
    engine.warm_up()
    failing = loads[0].model.generate = FailsAbove(loads[0].model.generate, most=2)
    image = Image.new("RGB", (200, 20), "white")

    regions = engine.recognise(image, time.monotonic() + SOON)
    assert [r.bbox for r in regions] == boxes and {r.text for r in regions} == {OUTPUT_CHAR}
    assert failing.attempts == [8, 4, 2, 2, 2, 2]
    assert engine.batch_limit == 2 and engine.cpu_fallback_loads == 0
    failing.attempts.clear()
    engine.recognise(image, time.monotonic() + SOON)
    assert failing.attempts == [2, 2, 2, 2]  # the smaller limit stays
    assert len(loads) == 1


def test_out_of_memory_for_a_single_region_reads_it_on_a_cpu_copy(tiny_model: Path, loads: list) -> None:
    boxes = [(0, 0, 16, 16), (20, 0, 36, 16)]
    engine = MangaOcrEngine(tiny_model, device="cpu", find_regions=_finder(boxes), cpu_fallback=True)
    engine.warm_up()
    failing = loads[0].model.generate = FailsAbove(loads[0].model.generate, most=0)
    regions = engine.recognise(Image.new("RGB", (40, 20), "white"), time.monotonic() + SOON)
    assert [r.bbox for r in regions] == boxes and {r.text for r in regions} == {OUTPUT_CHAR}
    assert failing.attempts == [2, 1, 1]
    assert engine.cpu_fallback_loads == 1 and len(loads) == 2
    assert loads[1].model.device.type == "cpu" and loads[1].model.generate.batches == [1, 1]


def test_without_cpu_fallback_out_of_memory_leaves_the_image_unscanned(tiny_model: Path, loads: list) -> None:
    engine = MangaOcrEngine(tiny_model, device="cpu", cpu_fallback=False)
    engine.warm_up()
    working = loads[0].model.generate
    loads[0].model.generate = FailsAbove(working, most=0)
    image = Image.new("RGB", (40, 20), "white")
    with pytest.raises(OcrError) as caught:
        engine.recognise(image, time.monotonic() + SOON)
    assert caught.value.reason == "detector_error"
    assert "out of memory" in caught.value.detail and "cpu_fallback is off" in caught.value.detail
    assert len(loads) == 1  # no copy was loaded
    loads[0].model.generate = working  # memory is back: the same engine reads again
    assert [r.text for r in engine.recognise(image, time.monotonic() + SOON)] == [OUTPUT_CHAR]


# on a GPU, for real


@pytest.fixture(scope="module")
def real_size_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model of kha-white/manga-ocr-base's shapes (random weights, "short" answers)."""
    _require_manga_ocr()
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")  # CI has none; run on a GPU machine by hand
    return write_mangaocr(tmp_path_factory.mktemp("real-size-mangaocr"), **REAL_SIZE)


def test_on_a_gpu_out_of_memory_means_smaller_batches_then_the_cpu_never_a_crash(
    real_size_model: Path, loads: list
) -> None:
    import torch

    boxes = [(8 * (i % 16), 40 * (i // 16), 8 * (i % 16) + 40, 40 * (i // 16) + 30) for i in range(64)]
    image = _textured_page(boxes)
    total = torch.cuda.get_device_properties(0).total_memory
    engine = MangaOcrEngine(
        real_size_model, device="cuda", find_regions=_finder(boxes), max_batch=64, use_gate=False
    )
    try:
        engine.warm_up()
        assert loads[0].model.dtype == torch.float16
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        assert {r.text for r in engine.recognise(image, time.monotonic() + SOON)} == {OUTPUT_CHAR}
        assert loads[0].model.generate.batches == [64]
        peak = torch.cuda.max_memory_allocated() - base

        # a cap that leaves room for about a third of that batch: it runs out of memory, then fits
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + peak / 3) / total)
        regions = engine.recognise(image, time.monotonic() + SOON)
        assert [r.bbox for r in regions] == boxes and {r.text for r in regions} == {OUTPUT_CHAR}
        assert engine.batch_limit < 64 and engine.cpu_fallback_loads == 0
        assert loads[0].model.generate.batches[1] == 64 and max(loads[0].model.generate.batches[2:]) < 64

        # no room at all: loading runs out of memory, and the engine reads on the CPU instead
        torch.cuda.set_per_process_memory_fraction(0.0)
        fallback = MangaOcrEngine(
            real_size_model, device="cuda", find_regions=_finder(boxes[:2]), use_gate=False
        )
        fallback.warm_up()
        assert fallback.resolved_device == "cpu" and not fallback.gated
        assert {r.text for r in fallback.recognise(image, time.monotonic() + SOON)} == {OUTPUT_CHAR}
        fallback.close()
        strict = MangaOcrEngine(real_size_model, device="cuda", cpu_fallback=False, use_gate=False)
        with pytest.raises(OcrError) as caught:
            strict.warm_up()
        assert caught.value.reason == "detector_error" and "out of memory" in caught.value.detail
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        engine.close()
