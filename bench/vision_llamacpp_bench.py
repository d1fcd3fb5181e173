"""Embedded vision backend throughput: images/s of the tiny random LLaVA through `LlamaCppBackend`.

    .venv/bin/python bench/vision_llamacpp_bench.py [--images 20] [--n-gpu-layers 0|-1] [--threads 4]
        [--models DIR] [--json]

Writes the tiny LLaVA pair of tests/tiny_llava.py (or uses the pair already in `--models`), judges
`--images` distinct PNGs from 4 threads through the backend and its GPU gate (`gpu0`, one slot), and
prints load seconds, images/s after the load, the most gate slots seen held at once (must be 1) and
whether this llama-cpp-python offloads to a GPU. `--n-gpu-layers -1` puts every layer (and the vision
tower) on the GPU of a CUDA build; on a CPU build it runs on the CPU. The model is random, so figures
measure the plumbing (image encode, projector, prompt, grammar-constrained decode), not a real model.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _png(seed: int) -> bytes:
    image = Image.new("RGB", (320, 200), (240, 240, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((8 + seed % 200, 8, 120 + seed % 180, 90), outline=(20, 20, 160), width=3)
    draw.text((10, 120), f"ID {1000 + seed}", fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def run(images: int, n_gpu_layers: int, threads: int | None, models: Path) -> dict[str, object]:
    from dropwarden.config import GpuSettings, Settings
    from dropwarden.gate import get_gate
    from dropwarden_vision.images import ImageLimits, prepare_image
    from dropwarden_vision.llamacpp import LlamaCppBackend, llama_cpp  # libstdc++ made global first
    from dropwarden_vision.schema import VerdictSpec
    from dropwarden_vision.settings import VisionSettings

    model, mmproj = models / "tiny-llava-text.gguf", models / "tiny-llava-mmproj.gguf"
    if not model.is_file():
        from tests.tiny_llava import write_tiny_llava

        model, mmproj = write_tiny_llava(models)
    gate_dir = Path(tempfile.mkdtemp(prefix="vision-gate-"))
    vision = VisionSettings(
        enabled=True,
        backend="llama-cpp",
        model_path=model,
        mmproj_path=mmproj,
        n_gpu_layers=n_gpu_layers,
        n_threads=threads,
        timeout=120.0,
    )
    settings = Settings(vision=vision, gpu=GpuSettings(lock_dir=gate_dir, resources={"gpu0": 1}))
    backend = LlamaCppBackend(settings, VerdictSpec.from_settings(vision))
    gate = get_gate(settings.gpu)
    prepared = [prepare_image(_png(i), ImageLimits()) for i in range(images)]
    most_held, stop = 0, threading.Event()

    def watch_gate() -> None:
        nonlocal most_held
        while not stop.is_set():
            most_held = max(most_held, gate.stats().get("gpu0", {}).get("in_flight", 0))
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch_gate, daemon=True)
    watcher.start()
    outcomes: dict[str, int] = {}
    try:
        backend.load()
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            for outcome in pool.map(lambda image: _judge(backend, image), prepared):
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        seconds = time.monotonic() - started
    finally:
        stop.set()
        watcher.join()
        backend.close()
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "gpu_offload_supported": bool(llama_cpp.llama_supports_gpu_offload()),
        "n_gpu_layers": n_gpu_layers,
        "images": images,
        "load_seconds": round(backend.load_seconds or 0.0, 3),
        "seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 2),
        "outcomes": outcomes,
        "gate_slots_most_held": most_held,
    }


def _judge(backend, image) -> str:
    try:
        answer = backend.judge(image)
    except Exception as exc:
        return type(exc).__name__
    return "sensitive" if answer.contains_sensitive else "clean"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--n-gpu-layers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    models = args.models or Path(tempfile.mkdtemp(prefix="tiny-llava-"))
    result = run(args.images, args.n_gpu_layers, args.threads, models)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
