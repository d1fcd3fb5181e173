"""Per-watch required detectors: a file of a kind a required detector judges passes only if it judged it."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from PIL import Image, ImageDraw

from dropwarden.act.policy import require
from dropwarden.config import WatchSettings
from dropwarden.findings import Finding, Location, Severity
from dropwarden.judge.detect import DetectorRun
from dropwarden.verdict import Problem, Reason, Verdict, VerdictKind
from dropwarden.views import View
from dropwarden_ocr.tesseract import probe

from .conftest import require as require_component
from .conftest import run_cli
from .daemon_harness import DaemonProcess

CLEAN = Verdict(VerdictKind.CLEAN)


class ImageJudge:
    """A detector of images, as a plugin would register one."""

    id = "vision"
    version = "1"
    view_kinds: ClassVar[frozenset[str]] = frozenset({"image"})

    def detect(self, view: View, ctx: object) -> list[Finding]:
        return []


def watch(*required: str) -> WatchSettings:
    return WatchSettings(path=Path("/srv/drop/inbox"), require=list(required))


def run(detector: str, view: str, problem: Problem | None = None) -> DetectorRun:
    return DetectorRun(detector, "1", view, 1.0, problem=problem)


def reasons(verdict: Verdict) -> list[Reason]:
    return [p.reason for p in verdict.problems]


def test_an_image_the_required_detector_did_not_judge_is_unscanned():
    judged_by_ocr_only = [run("regex", "ocr:tesseract:0")]
    verdict = require(watch("vision"), CLEAN, "image", judged_by_ocr_only, {"vision": ImageJudge()})
    assert verdict.kind is VerdictKind.UNSCANNED
    assert reasons(verdict) == [Reason.REQUIRED_MISSING]
    assert verdict.reason == "policy: required_detector_missing (vision judged no view of it)"


def test_a_required_detector_not_loaded_leaves_every_file_unscanned():
    """Its kinds are unknown without it (the core knows no plugin's detectors by name): fail-closed."""
    for kind in ("image", "text"):
        verdict = require(watch("vision"), CLEAN, kind, [run("regex", "metadata")], {})
        assert reasons(verdict) == [Reason.REQUIRED_MISSING]
        assert "vision not loaded" in (verdict.reason or "")


def test_files_of_other_kinds_are_untouched():
    assert require(watch("vision"), CLEAN, "text", [run("regex", "text")], {"vision": ImageJudge()}) is CLEAN
    assert require(watch("vision"), CLEAN, "text", [], {"vision": ImageJudge()}) is CLEAN


def test_an_image_the_required_detector_judged_passes():
    verdict = require(watch("vision"), CLEAN, "image", [run("vision", "image")], {"vision": ImageJudge()})
    assert verdict is CLEAN


def test_a_required_detector_that_failed_leaves_its_own_problem_alone():
    timeout = Problem(Reason.TIMEOUT, "25s", "vision")
    failed = Verdict(VerdictKind.UNSCANNED, problems=(timeout,))
    verdict = require(
        watch("vision"), failed, "image", [run("vision", "image", timeout)], {"vision": ImageJudge()}
    )
    assert verdict is failed


def test_findings_stand_and_the_missing_detector_is_added():
    finding = Finding(
        "pii.email", "pii.email", "regex", "1", Severity.parse("medium"), 1.0, Location("metadata"), "x", "x"
    )
    found = Verdict(VerdictKind.FINDING, findings=(finding,))
    verdict = require(watch("vision"), found, "image", [], {})
    assert verdict.kind is VerdictKind.FINDING
    assert verdict.findings == (finding,)
    assert reasons(verdict) == [Reason.REQUIRED_MISSING]


def test_an_unknown_detector_not_loaded_is_required_of_every_file():
    assert reasons(require(watch("audio"), CLEAN, "text", [], {})) == [Reason.REQUIRED_MISSING]


def test_a_watch_without_require_changes_nothing():
    assert require(watch(), CLEAN, "image", [], {}) is CLEAN


def _tesseract_ready() -> bool:
    found = probe("tesseract")
    return found.problem is None and not found.missing("eng")


def test_the_daemon_holds_every_file_when_a_required_detector_is_off(tmp_path: Path):
    """An image OCR found clean is not released on OCR alone; with vision not loaded at all, nothing in
    the watch is (its kinds are unknown without it)."""
    require_component(_tesseract_ready(), "tesseract with eng language data")
    inbox, outbound, quarantine = tmp_path / "inbox", tmp_path / "outbound", tmp_path / ".quarantine"
    inbox.mkdir()
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "dropwarden.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n[audit]\npath = "{audit}"\n'
        f'[metrics]\nlisten = "127.0.0.1:0"\n[daemon]\nsettle_stat = 0.3\n'
        '[vision]\nenabled = false\n[ocr]\nenabled = true\n[ocr.tesseract]\nlanguages = "eng"\n'
        f'[[watch]]\nname = "inbox"\npath = "{inbox}"\nquarantine_dir = "{quarantine}"\n'
        f'release_to = "{outbound}"\non_unscanned = ["quarantine"]\nrequire = ["vision"]\n'
    )
    daemon = DaemonProcess(config, audit).start()
    try:
        picture = Image.new("RGB", (96, 64), "white")
        ImageDraw.Draw(picture).rectangle((10, 10, 86, 54), outline="navy", fill=(200, 220, 240))
        picture.save(inbox / "photo.png")
        (inbox / "notes.txt").write_text("Weekly status: all systems nominal.\n")
        photo = daemon.wait_for(lambda: daemon.decisions_for("photo.png"), what="photo judged")[0]
        notes = daemon.wait_for(lambda: daemon.decisions_for("notes.txt"), what="notes judged")[0]
    finally:
        daemon.stop()
    assert any(run["detector"] == "regex" and run["view"].startswith("ocr") for run in photo["detectors"])
    assert (photo["verdict"], photo["outcome"]) == ("unscanned", "unscanned")
    assert "required_detector_missing (vision not loaded)" in photo["reason"]
    assert not (outbound / "photo.png").exists() and not (inbox / "photo.png").exists()
    assert len(list(quarantine.glob("*.json"))) == 2
    assert notes["outcome"] == "unscanned" and "vision not loaded" in notes["reason"]
    assert not (outbound / "notes.txt").exists()


def test_config_check_warns_of_a_required_detector_that_is_not_loaded(write_config, tmp_path: Path):
    inbox = tmp_path / "inbox"
    body = f'[vision]\nenabled = false\n[[watch]]\nname = "inbox"\npath = "{inbox}"\nrequire = ["vision"]\n'
    result = run_cli("config", "check", "--config", str(write_config(body)))
    assert result.returncode == 0, result.stderr
    assert "warning: watch inbox: required detector 'vision' is not loaded" in result.stderr
