"""MangaOCR through the engine: crops per second read one at a time against batched, with a model of
`kha-white/manga-ocr-base`'s shapes written at run time (random weights, every answer 16 decoder steps).

    PYTHONPATH=daemon:plugins python bench/mangaocr_bench.py --device cuda
    PYTHONPATH=daemon:plugins python bench/mangaocr_bench.py --device cpu --crops 8 --crops-alone 4 \
        --batches 1,8 --workers 4

Each configuration runs `--workers` threads that each call `MangaOcrEngine.recognise` on pages of
`--regions` text regions (cropping, the model's image processor, the micro-batcher, the GPU gate, the
batched `generate`, decoding and post-processing: everything the daemon's OCR extractor calls), until
`--crops` regions have been read. `max_batch = 1` is the engine reading one crop per `generate`, as
`MangaOcr.__call__` does.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/tiny_mangaocr.py writes the model

from dropwarden.gate import Gate  # noqa: E402
from dropwarden_ocr.mangaocr import MangaOcrEngine  # noqa: E402
from tests.tiny_mangaocr import REAL_SIZE, write_mangaocr  # noqa: E402

PAGE = (1200, 1600)


def _page(regions: int, seed: int) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """A white page with `regions` boxes of random texture: speech-bubble-sized columns and lines."""
    rng = np.random.default_rng(seed)
    page = Image.new("RGB", PAGE, "white")
    boxes = []
    for index in range(regions):
        width, height = (60, 300) if index % 2 else (320, 50)
        left = int(rng.integers(0, PAGE[0] - width))
        top = int(rng.integers(0, PAGE[1] - height))
        texture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        page.paste(Image.fromarray(texture), (left, top))
        boxes.append((left, top, left + width, top + height))
    return page, boxes


def _run(engine: MangaOcrEngine, pages: list, workers: int, crops: int, steps: int) -> float:
    """crops/s with `workers` threads reading pages until `crops` regions are read."""
    done = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        turn = number
        while True:
            with lock:
                if done[0] >= crops or errors:
                    return
            page, boxes = pages[turn % len(pages)]
            turn += workers
            try:
                regions = engine.recognise(page, time.monotonic() + 600)
            except BaseException as exc:
                errors.append(exc)
                return
            longest = max((len(region.text) for region in regions), default=0)
            if longest < steps // 2:  # post-processing may change a few characters, not half of them
                errors.append(AssertionError(f"answers of {[len(r.text) for r in regions]} characters"))
            with lock:
                done[0] += len(boxes)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return done[0] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--batches", default="1,8,32,64", help="max_batch values to measure")
    parser.add_argument("--crops", type=int, default=2000, help="regions read per batched configuration")
    parser.add_argument("--crops-alone", type=int, default=200, help="regions read with max_batch 1")
    parser.add_argument("--workers", type=int, default=32, help="threads calling the engine")
    parser.add_argument("--regions", type=int, default=4, help="text regions per page")
    parser.add_argument("--steps", type=int, default=16, help="decoder steps (characters) per crop")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument(
        "--model-dir", type=Path, help="write the model here (default: a temporary directory)"
    )
    parser.add_argument("--torch-threads", type=int, default=0, help="torch's CPU threads (0: its default)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir or Path(scratch) / "model"
        started = time.perf_counter()
        if not (model_dir / "config.json").is_file():
            write_mangaocr(model_dir, output="endless", **REAL_SIZE)
        print(f"model written in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        pages = [_page(args.regions, seed) for seed in range(16)]
        boxes_of = {id(page): boxes for page, boxes in pages}
        gate = Gate(Path(scratch) / "gate", {"gpu0": 1})
        engine = MangaOcrEngine(
            model_dir,
            device=args.device,
            find_regions=lambda image, deadline: boxes_of[id(image)],
            gate=gate,
            max_tokens=args.steps + 1,  # the decoder start token, then the answer
            max_wait=args.max_wait_ms / 1000,
            max_batch=max(int(b) for b in args.batches.split(",")),
        )
        started = time.perf_counter()
        engine.warm_up()
        import torch

        dtype = str(next(engine._ocr.model.parameters()).dtype)
        device = engine.resolved_device or "?"
        name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
        print(
            f"loaded on {device} ({name}, {dtype}) in {time.perf_counter() - started:.1f}s", file=sys.stderr
        )
        figures = []
        for batch in (int(b) for b in args.batches.split(",")):
            engine.set_max_batch(batch)
            crops = args.crops_alone if batch == 1 else args.crops
            _run(engine, pages, args.workers, min(crops, 4 * batch, 64), args.steps)  # warm-up
            before = engine._batcher.batches
            rate = _run(engine, pages, args.workers, crops, args.steps)
            batches = engine._batcher.batches - before
            figures.append({"max_batch": batch, "crops_per_s": round(rate, 1), "batches": batches})
            print(f"max_batch {batch:3d}: {rate:8.1f} crops/s ({batches} generate calls)", file=sys.stderr)
        engine.close()
    result = {"device": device, "gpu": name, "dtype": dtype, "steps": args.steps, "workers": args.workers}
    result["regions_per_page"] = args.regions
    result["figures"] = figures
    if args.json:
        print(json.dumps(result))
    else:
        alone = figures[0]["crops_per_s"]
        print(f"{name} ({dtype}), {args.steps} decoder steps per crop, {args.workers} threads")
        for row in figures:
            speedup = row["crops_per_s"] / alone
            print(f"  max_batch {row['max_batch']:3d}: {row['crops_per_s']:8.1f} crops/s  x{speedup:.1f}")


if __name__ == "__main__":
    main()
