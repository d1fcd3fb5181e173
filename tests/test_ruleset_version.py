"""The ruleset version follows every setting that can change a verdict: rules, limits, [vision], [ocr]."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from dropwarden.configload import load_config
from dropwarden.runtime import build_runtime, ruleset_version
from dropwarden_ocr.tesseract import probe

from .conftest import require
from .test_daemon import Drop
from .test_vision import CLEAN, FakeServer

BASE = """
[vision]
enabled = true
base_url = "http://127.0.0.1:9/v1"
min_confidence = 0.5
timeout = 5.0
[ocr]
enabled = true
[ocr.tesseract]
languages = "eng"
"""


def _tesseract_ready() -> bool:
    found = probe("tesseract")
    return found.problem is None and not found.missing("eng+osd")


@pytest.fixture(autouse=True)
def _tesseract() -> None:
    require(_tesseract_ready(), "tesseract with eng and osd language data")


def version_of(tmp_path: Path, toml: str) -> str:
    """The ruleset version of a daemon started with this configuration (state and gate in tmp_path)."""
    config = tmp_path / "dropwarden.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n[gpu]\nlock_dir = "{tmp_path / "gate"}"\n{toml}'
    )
    runtime = build_runtime(load_config(config, environ={}).settings)
    try:
        return ruleset_version(runtime)
    finally:
        runtime.close()


def test_equal_settings_give_the_same_version_every_time(tmp_path: Path) -> None:
    assert version_of(tmp_path, BASE) == version_of(tmp_path, BASE)


CHANGES_THAT_REJUDGE = {
    "a rule disabled": '[rules]\ndisable = ["pii.email"]\n',
    "a limit": "[limits]\nmax_file_size = 1048576\n",
    "vision min_confidence": ("min_confidence = 0.5", "min_confidence = 0.8"),
    "a vision category": (
        "[ocr]",
        '[vision.categories.payment_card]\ntype = "VISION_CARD"\nseverity = "low"\n[ocr]',
    ),
    "the vision prompt": ("timeout = 5.0", 'timeout = 5.0\nprompt = "Is there a passport?"'),
    "the vision response format": ("timeout = 5.0", 'timeout = 5.0\nresponse_format = "json_object"'),
    "the vision endpoint": ("127.0.0.1:9/v1", "127.0.0.1:10/v1"),
    "the OCR page segmentation mode": ('languages = "eng"', 'languages = "eng"\npsm = 6'),
    "the OCR languages": ('languages = "eng"', 'languages = "eng+osd"'),
    "the OCR confidence cut": ("[ocr]\nenabled = true", "[ocr]\nenabled = true\nmin_confidence = 0.4"),
    "OCR off": ("[ocr]\nenabled = true", "[ocr]\nenabled = false"),
}


def _changed(change: str | tuple[str, str]) -> str:
    if isinstance(change, str):
        return BASE + change
    old, new = change
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


@pytest.mark.parametrize("change", CHANGES_THAT_REJUDGE.values(), ids=CHANGES_THAT_REJUDGE.keys())
def test_a_setting_that_can_change_a_verdict_changes_the_version(
    tmp_path: Path, change: str | tuple[str, str]
) -> None:
    assert version_of(tmp_path, _changed(change)) != version_of(tmp_path, BASE)


HOW_REQUESTS_RUN = {
    "vision timeout": ("timeout = 5.0", "timeout = 9.0"),
    "vision retries": ("timeout = 5.0", "timeout = 5.0\nretries = 3"),
    "vision concurrency": ("timeout = 5.0", "timeout = 5.0\nmax_in_flight = 2"),
    "the alert sinks": '[[alerts.sink]]\ntype = "jsonl"\npath = "/tmp/elsewhere.jsonl"\n',
}


@pytest.mark.parametrize("change", HOW_REQUESTS_RUN.values(), ids=HOW_REQUESTS_RUN.keys())
def test_how_requests_run_re_judges_nothing(tmp_path: Path, change: str | tuple[str, str]) -> None:
    assert version_of(tmp_path, _changed(change)) == version_of(tmp_path, BASE)


# through the daemon: a file left in the folder is judged again after a reload that changes a verdict


def _picture(path: Path) -> Path:
    image = Image.new("RGB", (64, 48), "white")
    ImageDraw.Draw(image).ellipse((8, 8, 40, 40), fill="navy")
    image.save(path)
    return path


REJUDGING_RELOADS = {
    "vision min_confidence": ("min_confidence = 0.5", "min_confidence = 0.7"),
    "OCR psm": ("psm = 3", "psm = 11"),
}


@pytest.mark.parametrize("old,new", REJUDGING_RELOADS.values(), ids=REJUDGING_RELOADS.keys())
def test_a_reload_that_changes_a_verdict_setting_re_judges_a_file_left_in_the_folder(
    tmp_path: Path, old: str, new: str
) -> None:
    server = FakeServer()
    server.answer = CLEAN
    drop = Drop(
        tmp_path,
        f'[gpu]\nlock_dir = "{tmp_path / "gate"}"\n'
        f'[vision]\nenabled = true\nbase_url = "{server.url}"\nmin_confidence = 0.5\ntimeout = 10.0\n'
        '[ocr]\nenabled = true\n[ocr.tesseract]\nlanguages = "eng"\npsm = 3\n',
        release=False,  # a clean file stays where it is
    )
    daemon = drop.daemon().start()
    try:
        _picture(drop.inbox / "picture.png")
        (first,) = daemon.wait_for(lambda: daemon.decisions_for("picture.png"), what="the first verdict")
        assert first["outcome"] == "clean" and len(server.chats) == 1

        drop.config.write_text(drop.config.read_text().replace(old, new))
        daemon.signal(signal.SIGHUP)
        (reload,) = daemon.wait_for(lambda: daemon.records("daemon.reload"), what="the reload")
        assert reload["body"]["accepted"] is True
        second = daemon.wait_for(
            lambda: daemon.decisions_for("picture.png")[1:], timeout=30, what="the file judged again"
        )
        assert second[0]["outcome"] == "clean" and len(server.chats) == 2
        assert (drop.inbox / "picture.png").exists()
    finally:
        daemon.stop()
        server.close()
