"""The MangaOCR engine with the real `manga_ocr.MangaOcr` over a tiny random model written by the tests.

What the model reads is noise (always `tiny_mangaocr.OUTPUT_CHAR`), but the rest is real: loading through
manga_ocr and transformers, lazily and once; the crops handed to the model; the bboxes and provenance in
the answer; the GPU gate's flock'ed slots; deadlines; load failures. No network: every test runs with
socket connections and name look-ups refused.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from dropwarden.gate import Gate, GateTimeout
from dropwarden_ocr.engine import OcrError, OcrRegion
from dropwarden_ocr.mangaocr import MangaOcrEngine

from .conftest import require
from .tiny_mangaocr import OUTPUT_CHAR, write_tiny_mangaocr

HAVE_MANGA_OCR = importlib.util.find_spec("manga_ocr") is not None
NOTO_CJK = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
SOON = 60.0  # a deadline that no test should reach by itself


def _require_manga_ocr() -> None:
    require(HAVE_MANGA_OCR, "manga-ocr (the `mangaocr` extra)")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch):
    """Refuse (and record) every connection and name look-up; the test fails if any was tried."""
    tried: list[str] = []

    def refuse(what: str):
        def refused(*args, **kwargs):
            tried.append(f"{what}{args[1:2] or args[:1]}")
            raise OSError(f"network refused in tests: {what}")

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    yield tried
    assert tried == [], f"network used: {tried}"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model directory, written once per test session."""
    _require_manga_ocr()
    return write_tiny_mangaocr(tmp_path_factory.mktemp("tiny-mangaocr"))


class Recorder:
    """Stands in front of MangaOcr's image processor: records each crop, then lets the real one work."""

    def __init__(self, processor, on_call=None):
        self.processor = processor
        self.crops: list[Image.Image] = []
        self.on_call = on_call

    def __call__(self, image, *args, **kwargs):
        self.crops.append(image.copy())
        if self.on_call is not None:
            self.on_call(len(self.crops))
        return self.processor(image, *args, **kwargs)


class Generations:
    """Stands in front of the model's `generate`: records each batch's size, then lets the real one work."""

    def __init__(self, generate, on_call=None):
        self.generate = generate
        self.batches: list[int] = []
        self.on_call = on_call

    def __call__(self, pixel_values, *args, **kwargs):
        self.batches.append(int(pixel_values.shape[0]))
        if self.on_call is not None:
            self.on_call(len(self.batches))
        return self.generate(pixel_values, *args, **kwargs)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch):
    """Every `manga_ocr.MangaOcr` constructed (the real class, counted), each with a `Recorder` in front of
    its processor and `Generations` in front of its model's `generate`."""
    import manga_ocr

    built: list = []
    original = manga_ocr.MangaOcr.__init__

    def counted(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)
        self.processor = Recorder(self.processor)
        self.model.generate = Generations(self.model.generate)

    monkeypatch.setattr(manga_ocr.MangaOcr, "__init__", counted)
    return built


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    if NOTO_CJK.is_file():
        return ImageFont.truetype(str(NOTO_CJK), size)
    return ImageFont.load_default(size)


def _page() -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """A rendered page: two horizontal lines and one vertical column; the boxes around each."""
    page = Image.new("RGB", (480, 360), "white")
    draw = ImageDraw.Draw(page)
    font = _font(28)
    boxes = []
    for y, line in ((20, "マイナンバー 1234"), (80, "山田太郎 さま")):
        draw.text((20, y), line, font=font, fill="black")
        boxes.append(tuple(int(v) for v in draw.textbbox((20, y), line, font=font)))
    top = 140
    column = []
    for char in "トウキョウ":
        draw.text((400, top), char, font=font, fill="black")
        column.append(draw.textbbox((400, top), char, font=font))
        top += 36
    boxes.append(
        (
            int(min(b[0] for b in column)),
            int(column[0][1]),
            int(max(b[2] for b in column)),
            int(column[-1][3]),
        )
    )
    return page, boxes


def _finder(boxes):
    calls: list[float] = []

    def find(image: Image.Image, deadline: float):
        calls.append(deadline)
        return list(boxes)

    find.calls = calls  # type: ignore[attr-defined]
    return find


def _padded(box, pad, size):
    return (
        max(0, box[0] - pad),
        max(0, box[1] - pad),
        min(size[0], box[2] + pad),
        min(size[1], box[3] + pad),
    )


# loading


def test_the_model_loads_lazily_once_across_images_and_threads(tiny_model: Path, loads: list) -> None:
    import manga_ocr

    page, boxes = _page()
    engine = MangaOcrEngine(tiny_model, device="cpu", find_regions=_finder(boxes))
    assert (engine.name, engine.model) == ("mangaocr", str(tiny_model))
    assert loads == [] and engine.loads == 0  # constructing loads nothing

    start = threading.Barrier(4)
    results: list[list[OcrRegion]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        start.wait()
        try:
            for _ in range(3):
                results.append(engine.recognise(page, time.monotonic() + SOON))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(results) == 12
    assert len(loads) == 1 and engine.loads == 1
    assert isinstance(loads[0], manga_ocr.MangaOcr)
    assert loads[0].model.device.type == "cpu" and engine.resolved_device == "cpu"
    assert engine.load_seconds is not None and engine.load_seconds > 0
    assert all([r.bbox for r in result] == boxes for result in results)
    assert len(loads[0].processor.crops) == 12 * len(boxes)


def test_warm_up_loads_before_the_first_image(tiny_model: Path, loads: list) -> None:
    engine = MangaOcrEngine(tiny_model, device="cpu")
    engine.warm_up()
    assert len(loads) == 1
    engine.warm_up()
    engine.recognise(Image.new("RGB", (64, 64), "white"), time.monotonic() + SOON)
    assert len(loads) == 1 and engine.loads == 1


# regions


def test_each_region_is_cropped_with_padding_and_read(tiny_model: Path, loads: list) -> None:
    page, boxes = _page()
    finder = _finder(boxes)
    engine = MangaOcrEngine(tiny_model, device="cpu", find_regions=finder, padding=6)
    deadline = time.monotonic() + SOON
    regions = engine.recognise(page, deadline)

    assert finder.calls == [deadline]
    assert [r.bbox for r in regions] == boxes
    assert [r.vertical for r in regions] == [False, False, True]
    assert all(r.text == OUTPUT_CHAR for r in regions)  # noise, from the tiny model
    assert all(r.confidence is not None and 0 < r.confidence <= 1 for r in regions)

    crops = loads[0].processor.crops[-len(boxes) :]  # the ones before are MangaOcr's own warm-up
    for crop, box in zip(crops, boxes, strict=True):
        want = page.crop(_padded(box, 6, page.size)).convert("L").convert("RGB")
        assert crop.size == want.size
        assert crop.mode == "RGB"
        assert crop.tobytes() == want.tobytes()  # the region's own pixels, in grey levels
        assert crop.convert("L").getextrema()[0] < 100  # text is in it


def test_boxes_are_clamped_small_ones_skipped_and_too_many_capped(tiny_model: Path, loads: list) -> None:
    image = Image.new("RGB", (400, 300), "white")
    boxes = [
        (-20, -10, 60, 40),  # sticks out: clamped to (0, 0, 60, 40)
        (100, 100, 103, 180),  # 3 px wide: skipped
        (10, 100, 30, 120),  # 20x20, the smallest kept: capped away
        (200, 50, 390, 290),  # the largest
        (120, 10, 180, 90),
        (300.7, 10.2, 380, 30),  # floats are truncated
    ]
    engine = MangaOcrEngine(tiny_model, device="cpu", find_regions=_finder(boxes), max_regions=3, padding=0)
    regions = engine.recognise(image, time.monotonic() + SOON)
    # the three largest of five kept, in the finder's order
    assert [r.bbox for r in regions] == [(0, 0, 60, 40), (200, 50, 390, 290), (120, 10, 180, 90)]
    assert [c.size for c in loads[0].processor.crops[-3:]] == [(60, 40), (190, 240), (60, 80)]


def test_without_a_finder_the_whole_image_is_one_region(tiny_model: Path, loads: list) -> None:
    image = Image.new("RGBA", (120, 40), (0, 0, 0, 0))  # transparent: read as white, not black
    ImageDraw.Draw(image).text((4, 4), "ABC", fill=(0, 0, 0, 255), font=_font(20))
    engine = MangaOcrEngine(tiny_model, device="cpu")
    regions = engine.recognise(image, time.monotonic() + SOON)
    assert [r.bbox for r in regions] == [(0, 0, 120, 40)]
    crop = loads[0].processor.crops[-1].convert("L")
    assert crop.size == (120, 40)
    assert crop.getpixel((110, 35)) == 255 and crop.getextrema()[0] < 100


def test_no_regions_means_no_load(tiny_model: Path, loads: list) -> None:
    engine = MangaOcrEngine(tiny_model, device="cpu", find_regions=_finder([(0, 0, 2, 2)]))
    assert engine.recognise(Image.new("RGB", (50, 50)), time.monotonic() + SOON) == []
    assert loads == []


def test_a_failing_region_finder_is_a_detector_error(tiny_model: Path) -> None:
    def broken(image, deadline):
        raise RuntimeError("layout analysis crashed")

    engine = MangaOcrEngine(tiny_model, device="cpu", find_regions=broken)
    with pytest.raises(OcrError) as caught:
        engine.recognise(Image.new("RGB", (50, 50)), time.monotonic() + SOON)
    assert caught.value.reason == "detector_error"
    assert "region finder failed" in caught.value.detail and "layout analysis crashed" in caught.value.detail


# the GPU gate


def _probe(lock_dir: Path) -> bool:
    """Whether the only `gpu0` slot is free, asked through a gate of our own (its own flock'ed files)."""
    try:
        Gate(lock_dir, {"gpu0": 1}).acquire("gpu0", 1, timeout=0).release()
    except GateTimeout:
        return False
    return True


def test_gated_work_holds_a_gate_slot_while_loading_and_reading(
    tiny_model: Path, loads: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import manga_ocr

    lock_dir = tmp_path / "gate"
    gate = Gate(lock_dir, {"gpu0": 1})
    free_while_loading: list[bool] = []
    counted_init = manga_ocr.MangaOcr.__init__

    def probing_init(self, *args, **kwargs):
        free_while_loading.append(_probe(lock_dir))
        counted_init(self, *args, **kwargs)

    monkeypatch.setattr(manga_ocr.MangaOcr, "__init__", probing_init)
    page, boxes = _page()
    # device "cpu" with use_gate=True: the same path as a CUDA device, on a machine without one
    engine = MangaOcrEngine(tiny_model, device="cpu", find_regions=_finder(boxes), gate=gate, use_gate=True)
    assert engine.gated
    engine.warm_up()
    assert free_while_loading == [False]
    assert _probe(lock_dir)  # given back after the load

    free_while_reading: list[bool] = []
    in_flight: list[int] = []

    def probe(_count: int) -> None:
        free_while_reading.append(_probe(lock_dir))
        in_flight.append(gate.stats()["gpu0"]["in_flight"])

    loads[0].model.generate.on_call = probe
    engine.recognise(page, time.monotonic() + SOON)
    assert loads[0].model.generate.batches == [len(boxes)]  # all regions in one batch, one slot held
    assert free_while_reading == [False]
    assert in_flight == [1]
    assert _probe(lock_dir) and gate.stats()["gpu0"]["in_flight"] == 0


def test_cpu_work_passes_no_gate(tiny_model: Path, loads: list, tmp_path: Path) -> None:
    lock_dir = tmp_path / "gate"
    gate = Gate(lock_dir, {"gpu0": 1})
    engine = MangaOcrEngine(tiny_model, device="cpu", gate=gate)
    assert not engine.gated
    engine.warm_up()
    free: list[bool] = []
    loads[0].processor.on_call = lambda _count: free.append(_probe(lock_dir))
    engine.recognise(Image.new("RGB", (64, 64), "white"), time.monotonic() + SOON)
    assert free == [True]
    assert gate.stats()["gpu0"] == {"waiting": 0, "in_flight": 0, "waits": 0}


def test_a_busy_gate_times_out_without_reading(tiny_model: Path, loads: list, tmp_path: Path) -> None:
    lock_dir = tmp_path / "gate"
    engine = MangaOcrEngine(tiny_model, device="cpu", gate=Gate(lock_dir, {"gpu0": 1}), use_gate=True)
    engine.warm_up()
    generations = loads[0].model.generate
    other_holder = Gate(lock_dir, {"gpu0": 1}).acquire("gpu0")  # another job, as another process would
    try:
        started = time.monotonic()
        with pytest.raises(OcrError) as caught:
            engine.recognise(Image.new("RGB", (64, 64), "white"), time.monotonic() + 0.3)
        assert 0.25 < time.monotonic() - started < 5
    finally:
        other_holder.release()
    assert caught.value.reason == "timeout"
    assert "gpu0" in caught.value.detail
    assert generations.batches == []  # nothing was read
    engine.recognise(Image.new("RGB", (64, 64), "white"), time.monotonic() + SOON)  # free again: reads
    assert generations.batches == [1]


def test_on_a_gpu_the_model_runs_there_through_the_gate(
    tiny_model: Path, loads: list, tmp_path: Path
) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")  # CI has none; run on a GPU machine by hand
    lock_dir = tmp_path / "gate"
    gate = Gate(lock_dir, {"gpu0": 1})
    page, boxes = _page()
    engine = MangaOcrEngine(tiny_model, device="auto", gate=gate, find_regions=_finder(boxes))
    engine.warm_up()
    assert engine.resolved_device == "cuda:0" and engine.gated
    assert loads[0].model.device.type == "cuda" and loads[0].model.dtype == torch.float16
    free: list[bool] = []
    loads[0].model.generate.on_call = lambda _count: free.append(_probe(lock_dir))
    regions = engine.recognise(page, time.monotonic() + SOON)
    assert [r.bbox for r in regions] == boxes and {r.text for r in regions} == {OUTPUT_CHAR}
    assert free == [False] and loads[0].model.generate.batches == [len(boxes)]
    assert _probe(lock_dir)
    engine.close()


# deadlines


def test_the_deadline_is_kept_between_regions(tiny_model: Path, loads: list) -> None:
    boxes = [(10 * i, 0, 10 * i + 10, 10) for i in range(5)]
    engine = MangaOcrEngine(tiny_model, device="cpu", find_regions=_finder(boxes), padding=0)
    engine.warm_up()
    recorder = loads[0].processor
    before = len(recorder.crops)
    deadline = time.monotonic() + 1.0

    def slow_second_region(count: int) -> None:
        if count == before + 2:
            time.sleep(max(0.0, deadline - time.monotonic()) + 0.01)

    recorder.on_call = slow_second_region
    with pytest.raises(OcrError) as caught:
        engine.recognise(Image.new("RGB", (60, 20), "white"), deadline)
    assert caught.value.reason == "timeout"
    assert "region 2 of 5" in caught.value.detail
    assert len(recorder.crops) - before == 2  # no third region once past the deadline


def test_a_region_finder_past_the_deadline_is_a_timeout(tiny_model: Path, loads: list) -> None:
    def slow(image, deadline):
        time.sleep(max(0.0, deadline - time.monotonic()) + 0.01)
        return [(0, 0, 20, 20)]

    engine = MangaOcrEngine(tiny_model, device="cpu", find_regions=slow)
    with pytest.raises(OcrError) as caught:
        engine.recognise(Image.new("RGB", (50, 50)), time.monotonic() + 0.1)
    assert caught.value.reason == "timeout"
    assert loads == []


def test_an_engine_busy_past_the_deadline_is_a_timeout(tiny_model: Path, loads: list) -> None:
    engine = MangaOcrEngine(tiny_model, device="cpu")
    engine.warm_up()
    reading = threading.Event()

    def hold(_count: int) -> None:
        reading.set()
        time.sleep(0.5)

    loads[0].model.generate.on_call = hold
    first = threading.Thread(
        target=engine.recognise, args=(Image.new("RGB", (40, 40)), time.monotonic() + SOON)
    )
    first.start()
    assert reading.wait(10)
    with pytest.raises(OcrError) as caught:
        engine.recognise(Image.new("RGB", (40, 40)), time.monotonic() + 0.1)
    first.join(10)
    assert caught.value.reason == "timeout" and "busy" in caught.value.detail


# load failures


def test_a_missing_model_directory_is_a_clear_detector_error(tmp_path: Path) -> None:
    _require_manga_ocr()
    missing = tmp_path / "models" / "manga-ocr-base"
    engine = MangaOcrEngine(missing, device="cpu")
    with pytest.raises(OcrError) as caught:
        engine.recognise(Image.new("RGB", (40, 40)), time.monotonic() + SOON)
    assert caught.value.reason == "detector_error"
    assert caught.value.detail == f"MangaOCR model directory {missing} does not exist"
    with pytest.raises(OcrError) as caught:
        engine.warm_up()
    assert caught.value.reason == "detector_error"


def test_a_directory_without_the_model_files_is_named_as_such(tmp_path: Path) -> None:
    _require_manga_ocr()
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(OcrError) as caught:
        MangaOcrEngine(str(tmp_path), device="cpu").warm_up()
    assert caught.value.reason == "detector_error"
    detail = caught.value.detail
    assert "not a MangaOCR model directory" in detail
    assert "preprocessor_config.json, vocab.txt, model.safetensors or pytorch_model.bin" in detail


def test_a_failed_load_is_remembered_then_retried_after_the_backoff(
    tiny_model: Path, loads: list, tmp_path: Path
) -> None:
    broken = tmp_path / "model"
    shutil.copytree(tiny_model, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text("{ not json")
    engine = MangaOcrEngine(broken, device="cpu", load_retry_after=0.5)
    image = Image.new("RGB", (40, 40))
    for attempt in range(3):
        with pytest.raises(OcrError) as caught:
            engine.recognise(image, time.monotonic() + SOON)
        assert caught.value.reason == "detector_error"
        assert f"cannot load the model from {broken}" in caught.value.detail
        assert ("next load attempt in" in caught.value.detail) == (attempt > 0)
    assert len(loads) == 1  # tried once, not once per image

    (broken / "config.json").write_text(json.dumps(config))  # repaired
    time.sleep(0.55)
    assert [r.text for r in engine.recognise(image, time.monotonic() + SOON)] == [OUTPUT_CHAR]
    assert len(loads) == 2 and engine.loads == 1


def test_cuda_without_a_gpu_is_a_detector_error(tiny_model: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    engine = MangaOcrEngine(tiny_model, device="cuda", gate=Gate(tmp_path / "gate", {"gpu0": 1}))
    with pytest.raises(OcrError) as caught:
        engine.warm_up()
    assert caught.value.reason == "detector_error"
    assert "sees no CUDA device" in caught.value.detail
    auto = MangaOcrEngine(tiny_model, device="auto", gate=Gate(tmp_path / "gate", {"gpu0": 1}))
    auto.warm_up()
    assert auto.resolved_device == "cpu" and not auto.gated


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "manga_ocr", None)  # import manga_ocr raises ImportError
    engine = MangaOcrEngine(tmp_path, device="cpu")
    with pytest.raises(OcrError) as caught:
        engine.warm_up()
    assert caught.value.reason == "detector_error"
    assert "pip install 'dropwarden[mangaocr]'" in caught.value.detail


def test_a_closed_engine_refuses(tiny_model: Path) -> None:
    engine = MangaOcrEngine(tiny_model, device="cpu")
    engine.warm_up()
    engine.close()
    engine.close()
    with pytest.raises(OcrError) as caught:
        engine.recognise(Image.new("RGB", (40, 40)), time.monotonic() + SOON)
    assert caught.value.reason == "detector_error" and "closed" in caught.value.detail


# hub names


def _hub_cache(root: Path, repo: str, model_dir: Path) -> Path:
    """A Hugging Face cache holding `repo` as `hf download` leaves it (refs/main -> snapshots/<commit>)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    shutil.copytree(model_dir, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return repo_dir / "snapshots" / commit


def test_a_hub_name_is_loaded_from_the_local_cache_offline(
    tiny_model: Path, loads: list, tmp_path: Path
) -> None:
    snapshot = _hub_cache(tmp_path / "hf", "kha-white/manga-ocr-base", tiny_model)
    engine = MangaOcrEngine("kha-white/manga-ocr-base", device="cpu", cache_dir=tmp_path / "hf")
    regions = engine.recognise(Image.new("RGB", (40, 40), "white"), time.monotonic() + SOON)
    assert engine.model == "kha-white/manga-ocr-base"
    assert [r.text for r in regions] == [OUTPUT_CHAR]
    assert len(loads) == 1
    assert loads[0].model.name_or_path == str(snapshot)


def test_a_hub_name_not_in_the_cache_is_not_fetched_unless_allowed(tmp_path: Path, no_network: list) -> None:
    _require_manga_ocr()
    engine = MangaOcrEngine("kha-white/manga-ocr-base", device="cpu", cache_dir=tmp_path / "hf")
    with pytest.raises(OcrError) as caught:
        engine.warm_up()
    assert caught.value.reason == "detector_error"
    assert "not in the local Hugging Face cache" in caught.value.detail
    assert "hf download kha-white/manga-ocr-base" in caught.value.detail

    fetching = MangaOcrEngine(
        "kha-white/manga-ocr-base", device="cpu", cache_dir=tmp_path / "hf", allow_download=True
    )
    with pytest.raises(OcrError) as caught:
        fetching.warm_up()
    assert caught.value.reason == "detector_error"
    assert "cannot fetch 'kha-white/manga-ocr-base' from the hub" in caught.value.detail
    assert no_network  # it did try (and the network refused)
    no_network.clear()


# construction


def test_settings_are_checked_when_the_engine_is_built(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate", {"gpu0": 1})
    with pytest.raises(ValueError, match="device"):
        MangaOcrEngine(tmp_path, device="tpu")
    with pytest.raises(ValueError, match="gate"):
        MangaOcrEngine(tmp_path, device="cuda")
    with pytest.raises(ValueError, match="gpu1"):
        MangaOcrEngine(tmp_path, device="cuda", gate=gate, gate_resource="gpu1")
    with pytest.raises(ValueError, match="max_regions"):
        MangaOcrEngine(tmp_path, device="cpu", max_regions=0)
    assert MangaOcrEngine(tmp_path, device="cuda:1", use_gate=False).device == "cuda:1"


MDWE_CHILD = """
import ctypes, sys, time
from PIL import Image
assert ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) == 0  # PR_SET_MDWE, REFUSE_EXEC_GAIN
from dropwarden_ocr.mangaocr import MangaOcrEngine, writable_code_forbidden
assert writable_code_forbidden()
regions = MangaOcrEngine(sys.argv[1], device="cpu").recognise(Image.new("L", (120, 40), 255), time.monotonic() + 60)
print(regions[0].text)
"""


def test_mangaocr_runs_on_the_cpu_where_executable_memory_is_forbidden(tiny_model: Path):
    """The shipped unit sets MemoryDenyWriteExecute=yes, under which oneDNN's generated kernels fail;
    the kernel's per-process MDWE (Linux 6.3+) stands in for it here."""
    import subprocess

    child = subprocess.run(
        [sys.executable, "-c", MDWE_CHILD, str(tiny_model)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip().splitlines()[-1] == OUTPUT_CHAR
    assert "oneDNN off" in child.stdout + child.stderr
