"""One GPU gate per process: vision's and MangaOCR's waits and slots are the ones /metrics reports."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw

from dropwarden.configload import load_config
from dropwarden.gate import Gate, get_gate
from dropwarden.runtime import build_runtime
from dropwarden_ocr.tesseract import probe

from .conftest import require
from .daemon_harness import metrics_port
from .test_daemon import Drop
from .test_vision import CLEAN, FakeServer


def gate_metrics(port: int, resource: str) -> dict[str, float]:
    """`waiting`, `in_flight` and `waits` of one gate resource, read from the daemon's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {}
    for name in ("waiting", "in_flight", "waits"):
        match = re.search(
            rf'^dropwarden_gate_{name}(?:_total)?\{{resource="{resource}"\}} (\S+)$', text, re.M
        )
        if match:
            found[name] = float(match.group(1))
    return found


def test_a_vision_request_waiting_at_the_gate_shows_in_the_daemons_metrics(tmp_path: Path) -> None:
    server = FakeServer()
    server.answer = CLEAN
    lock_dir = tmp_path / "gate"
    drop = Drop(
        tmp_path,
        f'[gpu]\nlock_dir = "{lock_dir}"\nresources = {{ gpu0 = 1, "vision-endpoint" = 1 }}\n'
        f'[vision]\nenabled = true\nbase_url = "{server.url}"\ntimeout = 30.0\n[ocr]\nenabled = false\n',
        release=False,
    )
    daemon = drop.daemon().start()
    # another process's job holds the only slot (a gate of our own over the same flock'ed files)
    other = Gate(lock_dir, {"vision-endpoint": 1}).acquire("vision-endpoint")
    try:
        port = metrics_port(daemon)
        assert gate_metrics(port, "vision-endpoint") == {"waiting": 0, "in_flight": 0, "waits": 0}
        image = Image.new("RGB", (64, 48), "white")
        ImageDraw.Draw(image).rectangle((8, 8, 40, 40), fill="teal")
        image.save(drop.inbox / "picture.png")
        daemon.wait_for(
            lambda: gate_metrics(port, "vision-endpoint").get("waiting") == 1, what="the wait in /metrics"
        )
        assert server.chats == []  # nothing asked while waiting
        other.release()
        daemon.wait_for(lambda: daemon.decisions_for("picture.png"), what="the verdict")
        assert gate_metrics(port, "vision-endpoint") == {"waiting": 0, "in_flight": 0, "waits": 1}
        assert len(server.chats) == 1
    finally:
        other.release()
        daemon.stop()
        server.close()


def test_mangaocr_built_by_the_ocr_plugin_passes_the_process_gate(tmp_path: Path) -> None:
    """The gate whose counts the daemon's /metrics reports (`get_gate(settings.gpu)`), not one of its own:
    on a GPU, MangaOCR's load and reading hold its slots there (a CPU needs no gate)."""
    found = probe("tesseract")
    require(found.problem is None and not found.missing("eng+osd"), "tesseract with eng and osd data")
    config = tmp_path / "dropwarden.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n[gpu]\nlock_dir = "{tmp_path / "gate"}"\n'
        '[ocr]\nenabled = true\nengines = ["tesseract", "mangaocr"]\n'
        '[ocr.tesseract]\nlanguages = "eng"\n[ocr.mangaocr]\ndevice = "cuda"\n'
    )
    settings = load_config(config, environ={}).settings
    runtime = build_runtime(settings)
    try:
        engine = runtime.registry.extractors["ocr-mangaocr"].engine  # type: ignore[attr-defined]
        assert engine.gated and engine.gate is get_gate(settings.gpu)
        with engine.gate.hold("gpu0"):  # what the engine holds while it works, counted process-wide
            assert get_gate(settings.gpu).stats()["gpu0"]["in_flight"] == 1
    finally:
        runtime.close()
