"""What one file can produce is bounded: findings are kept per type and in all, the rest only counted,
inside the detectors (no finding is built past the cap), in `scan`, the daemon's records and alerts."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import pytest

from dropwarden.act.policy import decide
from dropwarden.config import Settings
from dropwarden.findings import Finding, FindingLimits, FindingTally, Location, Severity
from dropwarden.redact import Fingerprinter
from dropwarden.registry import DetectContext
from dropwarden.verdict import VerdictBuilder
from dropwarden.views import TextView
from dropwarden_regex import RegexDetector
from dropwarden_regex.settings import CustomRule, RulesSettings
from tests.conftest import run_cli
from tests.daemon_harness import DaemonProcess
from tests.ocr_pages import luhn_complete

KEY = b"k" * 32


def dense_cards(size: int, seed: int = 7) -> tuple[bytes, int]:
    """`size` bytes of distinct Luhn-valid Visa numbers, one per line (4-4-4-4), and how many there are."""
    rnd = random.Random(seed)
    lines = []
    total = 0
    while total + 20 <= size:
        number = luhn_complete("4" + "".join(rnd.choice("0123456789") for _ in range(14)))
        lines.append(f"{number[:4]} {number[4:8]} {number[8:12]} {number[12:]}\n")
        total += 20
    return "".join(lines).encode().ljust(size, b"\n"), len(lines)


def finding(kind: str, severity: Severity, offset: int = 0) -> Finding:
    return Finding(
        kind, f"r.{kind}", "t", "1", severity, 0.9, Location("text", offset=offset), "[******]", "fp"
    )


# ----------------------------------------------------------------------------------------- the tally


def test_the_tally_keeps_the_first_of_each_type_and_counts_the_rest():
    tally = FindingTally(FindingLimits(per_type=3, total=5))
    for offset in range(10):
        tally.add(finding("EMAIL", Severity.MEDIUM, offset))
    for offset in range(4):
        tally.add(finding("PHONE", Severity.MEDIUM, offset))
    tally.omit("EMAIL", Severity.MEDIUM, 1000)  # counted by a detector, never built
    kept = tally.kept
    assert [f.type for f in kept] == ["EMAIL"] * 3 + ["PHONE"] * 2  # per type 3, in all 5
    assert [(c.type, c.count, c.kept, c.exact) for c in tally.counts()] == [
        ("EMAIL", 1010, 3, True),
        ("PHONE", 4, 2, True),
    ]


def test_past_every_cap_a_new_type_and_a_more_severe_finding_are_still_kept():
    """So the policy, which compares severities, sees every type found at its highest severity."""
    tally = FindingTally(FindingLimits(per_type=2, total=2))
    for offset in range(5):
        tally.add(finding("PHONE", Severity.LOW, offset))
    assert tally.add(finding("CREDIT_CARD", Severity.HIGH))  # a new type: kept although the total is reached
    assert not tally.add(finding("PHONE", Severity.LOW, 9))
    assert tally.add(finding("PHONE", Severity.CRITICAL, 10))  # more severe than any kept PHONE: kept
    assert not tally.add(finding("PHONE", Severity.CRITICAL, 11))
    builder = VerdictBuilder(FindingLimits(per_type=2, total=2))
    builder.add_findings(tally.findings())
    verdict = builder.build()
    assert {(c.type, c.count, c.severity) for c in verdict.counts} == {
        ("PHONE", 8, Severity.CRITICAL),
        ("CREDIT_CARD", 1, Severity.HIGH),
    }
    watch = Settings(watch=[{"path": "/srv/in", "min_severity": "critical"}]).watch[0]
    decision = decide(watch, verdict)
    assert decision.outcome == "finding" and {f.type for f in decision.acting_findings} == {"PHONE"}


# --------------------------------------------------------------------------------- inside the detector


DEFAULT_LIMITS = FindingLimits()


def detect(text: str, limits: FindingLimits | None = DEFAULT_LIMITS, rules: RulesSettings | None = None):
    detector = RegexDetector(rules or RulesSettings())
    return detector.detect(TextView("text", text, "utf-8"), DetectContext(Fingerprinter(KEY), "/x", limits))


def test_the_regex_detector_builds_no_finding_past_the_cap_and_counts_every_match(monkeypatch):
    built = []

    class Counted(Finding):  # the detector's own Finding, counted as it is built
        __slots__ = ()

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            built.append(1)

    monkeypatch.setattr("dropwarden_regex.detector.Finding", Counted)
    data, count = dense_cards(1 << 22)
    detector = RegexDetector(RulesSettings())
    view = TextView.from_utf8("text", data.decode(), data)
    ctx = DetectContext(Fingerprinter(KEY), "/x", FindingLimits(per_type=50, total=200, counted=10**9))
    detector.detect(TextView("text", "warm 4111 1111 1111 1111", "utf-8"), ctx)
    tracemalloc.start()
    try:
        found = detector.detect(view, ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(found) == 50 and found.omitted == {("CREDIT_CARD", Severity.HIGH): count - 50}
    assert len(built) == 1 + 50  # the warm-up's, and the 50 kept
    assert [f.location.line for f in found[:3]] == [1, 2, 3]
    # 200,000 findings would take ~150 MiB; a segment's matches and the 50 kept take a few
    assert peak < 24 << 20, f"{peak >> 20} MiB traced while detecting"


def test_allow_listed_values_are_not_counted_and_context_rules_still_apply_under_the_cap():
    text = "".join(f"card 4111 1111 1111 1111 id {i}\n" for i in range(120)) + "card 5555 5555 5555 4444\n"
    found = detect(
        text, FindingLimits(per_type=5, total=10), RulesSettings(allow={"values": ["4111111111111111"]})
    )
    assert [(f.type, f.location.line) for f in found] == [("CREDIT_CARD", 121)] and not found.omitted
    rule = CustomRule(id="acme.ref", type="REF", pattern=r"REF\d{4}", context=["order"], context_window=8)
    pad = " " * 20
    refs = "".join(f"order REF{i:04d}{pad}\n" if i % 2 else f"xxxxx REF{i:04d}{pad}\n" for i in range(300))
    found = detect(refs, FindingLimits(per_type=5), RulesSettings(packs=[], custom=[rule]))
    assert len(found) == 5 and found.omitted == {("REF", Severity.MEDIUM): 145}


def test_past_max_findings_counted_a_type_stops_being_looked_for_and_its_count_is_a_lower_bound():
    data, count = dense_cards(1 << 20)
    text = data.decode() + "mail me: taro@example.jp\n"
    found = detect(text, FindingLimits(per_type=10, total=50, counted=1000))
    assert found.inexact == {"CREDIT_CARD"}
    assert found.omitted[("CREDIT_CARD", Severity.HIGH)] == 1000 - 10 and count > 1000
    assert [f.type for f in found].count("EMAIL") == 1  # other types are still found after it


def test_without_limits_every_finding_is_built():
    text = "".join(f"taro{i}@example.jp\n" for i in range(80))
    assert len(detect(text, None)) == 80 and len(detect(text)) == 50


# -------------------------------------------------------------------------------- scan and the daemon


@pytest.fixture(scope="module")
def dense_file(tmp_path_factory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("dense") / "cards.txt"
    data, count = dense_cards(1 << 20)
    path.write_bytes(data)
    return path, count


def test_scan_of_a_dense_megabyte_gives_a_bounded_record_with_the_true_count(dense_file, write_config):
    path, count = dense_file
    result = run_cli("scan", "--format", "json", "--config", str(write_config()), str(path))
    assert result.returncode == 1, result.stderr
    assert len(result.stdout) < 40_000  # was 20 MB
    (record,) = json.loads(result.stdout)["files"]
    assert len(record["findings"]) == 50
    assert record["counts"] == [
        {"type": "CREDIT_CARD", "count": count, "kept": 50, "severity": "high", "exact": True}
    ]
    assert json.loads(result.stdout)["summary"]["findings_by_type"] == {"CREDIT_CARD": count}


def test_the_daemon_records_and_alerts_a_dense_megabyte_in_bounded_lines_with_the_true_count(
    dense_file, tmp_path
):
    path, count = dense_file
    inbox, audit, alerts = tmp_path / "inbox", tmp_path / "audit.jsonl", tmp_path / "alerts.jsonl"
    quarantine = tmp_path / "q"
    inbox.mkdir()
    config = tmp_path / "dropwarden.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n[audit]\npath = "{audit}"\n[metrics]\nlisten = ""\n'
        f'[[watch]]\npath = "{inbox}"\nquarantine_dir = "{quarantine}"\n'
        f'[[alerts.sink]]\ntype = "jsonl"\npath = "{alerts}"\n'
    )
    daemon = DaemonProcess(config, audit).start()
    try:
        staged = tmp_path / "cards.txt"
        staged.write_bytes(path.read_bytes())
        staged.rename(inbox / "cards.txt")
        daemon.wait_for(lambda: daemon.decisions_for("cards.txt"), what="decision", timeout=60)
        daemon.wait_for(lambda: alerts.exists() and alerts.read_text().strip(), what="alert", timeout=30)
    finally:
        daemon.stop()
    (line,) = [raw for raw in audit.read_text().splitlines() if '"type":"decision"' in raw.replace(" ", "")]
    assert len(line) < 40_000  # was 19.9 MB
    decision = json.loads(line)["body"]
    assert decision["verdict"] == "finding" and len(decision["findings"]) == 50
    (run,) = [r for r in decision["detectors"] if r["detector"] == "regex" and r["view"] == "text"]
    assert (run["findings"], run["kept"]) == (count, 50)
    expected = [{"type": "CREDIT_CARD", "count": count, "kept": 50, "severity": "high", "exact": True}]
    assert decision["counts"] == expected
    assert len(alerts.read_text()) < 40_000  # was 12.7 MB
    (alert,) = [json.loads(raw) for raw in alerts.read_text().splitlines()]
    assert alert["dropwarden"]["counts"] == expected and len(alert["dropwarden"]["findings"]) == 50
    (sidecar,) = quarantine.glob("*.json")
    assert sidecar.stat().st_size < 40_000  # was 28 MB


def test_an_ascii_file_is_judged_without_decoding_it_whole(tmp_path):
    """Its view reads the file's own bytes as text; the regex detector only slices them, so a 64 MiB
    file is not held twice. A detector that reads `text` still gets all of it."""
    from dropwarden.judge.extract import text_view

    data = b"mail taro@example.jp\n" + b"x" * 5000 + b"\ncard 4111 1111 1111 1111 end\n"
    view = text_view(data)
    found = RegexDetector(RulesSettings()).detect(view, DetectContext(Fingerprinter(KEY), "/x"))
    assert not {"text", "_text"} & set(view.__dict__)  # no decoded copy held, none made
    decoded = TextView.from_utf8("text", data.decode(), data)
    assert found == RegexDetector(RulesSettings()).detect(decoded, DetectContext(Fingerprinter(KEY), "/x"))
    assert [(f.type, f.location.line, f.excerpt) for f in found] == [
        ("EMAIL", 1, "mail [******jp] xxxxxxxxxxxxxxx"),
        ("CREDIT_CARD", 3, "xxxxxxxxxx card [******1111] end "),
    ]
    assert view.text == data.decode() and len(view.sliceable) == len(data)
