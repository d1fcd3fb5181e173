"""File names are judged: a sensitive value in a name is a finding, and no output shows it raw.

The relative path below the watched folder (or the scanned directory) is judged by the text rules
as view "name" (and "name:words", the same name with separators between words read as spaces).
Every output that shows the path — the audit record's `path`/`path_b64`, alerts, the service log,
`scan` in every format — shows it with each matched span masked as an excerpt masks a value; the
exact bytes are kept only in the private quarantine sidecar, which `restore` needs.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dropwarden.config import Settings
from dropwarden.judge.names import JudgedName, display_name, redact_name, redact_path
from dropwarden.runtime import build_runtime

from .conftest import run_cli
from .daemon_harness import DaemonProcess, metrics_port

CARD = "4111111111111111"
CLEAN = "Weekly status: all systems nominal.\n"
# What must appear nowhere but in the sidecar: the number, and the name that spells it.
RAW = (CARD, "4111 1111 1111 1111", base64.b64encode(CARD.encode()).decode()[:16])


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Any:
    runtime = build_runtime(Settings(state={"dir": tmp_path_factory.mktemp("state")}, ocr={"enabled": False}))
    yield runtime.judge
    runtime.close()


# ------------------------------------------------------------------------------------------ redaction


@settings(max_examples=300, deadline=None)
@given(
    raw=st.binary(max_size=40) | st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogateescape")),
    spans=st.lists(st.tuples(st.integers(0, 160), st.integers(0, 160)), max_size=4),
)
def test_redacted_text_and_bytes_are_two_renderings_of_one_name(
    raw: bytes, spans: list[tuple[int, int]]
) -> None:
    """Whatever the bytes and spans: the redacted text is exactly how the redacted bytes display, and
    without spans both are the name as it is (the form `walk.display_path` gives)."""
    text, data = redact_name(raw, spans)
    assert text == display_name(data)
    assert redact_name(raw, []) == (os.fsencode(raw).decode("utf-8", "backslashreplace"), raw)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("card-4111111111111111.txt", "card-[******1111].txt"),
        ("ssn_123-45-6789.pdf", "ssn_[******89].pdf"),
        ("tel-090-1234-5678.txt", "tel-[******78].txt"),
        ("taro@example.jp.eml", "[******.eml]"),
        ("sub/4111 1111 1111 1111/notes.txt", "sub/[******1111]/notes.txt"),
    ],
)
def test_a_value_in_a_name_is_a_finding_shown_masked(judge: Any, name: str, shown: str) -> None:
    """Cards, SSNs, phone numbers and e-mail addresses in a name (in any component, glued to words by
    `-`, `_` or `.`) are findings of view "name", and the name is shown with each one masked."""
    judged, runs = judge.judge_relative_name(name)
    findings = [f for run in runs for f in run.findings]
    assert findings and all(f.location.view in ("name", "name:words") for f in findings)
    assert judged.show() == shown
    assert redact_path("/srv/drop/inbox", name, judged)[0] == "/srv/drop/inbox/" + shown


@pytest.mark.parametrize(
    "name",
    ["order-20231104-7781.txt", "IMG_20240517_123456.jpg", "v1.2.3-release.tar.gz", "report.2024.txt"],
)
def test_ordinary_names_are_shown_as_they_are(judge: Any, name: str) -> None:
    judged, runs = judge.judge_relative_name(name)
    assert not [f for run in runs for f in run.findings]
    assert judged.show() == name and redact_path("/in", name, judged) == (
        "/in/" + name,
        b"/in/" + name.encode(),
    )


def test_bytes_that_are_not_utf8_are_masked_in_the_bytes_too(judge: Any) -> None:
    name = b"card-" + CARD.encode() + b"-\xff.txt"
    judged, _ = judge.judge_relative_name(name)
    text, data = redact_path("/in", name, judged)
    assert text == "/in/card-[******1111]-\\xff.txt"
    assert data == b"/in/card-[******1111]-\xff.txt"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (b"x\xff" + CARD.encode() + b".txt", "x\\xff[******1111].txt"),  # an invalid byte glued to it
        (b"\xff\xfe" + CARD.encode() + b".txt", "\\xff\\xfe[******1111].txt"),
        ("４１１１１１１１１１１１１１１１.txt".encode(), "[******１１１１].txt"),  # full-width digits
        ("カード".encode("shift_jis") + CARD.encode() + b".txt", "[******.txt]"),  # a Shift_JIS name
    ],
)
def test_a_value_in_a_name_is_found_whatever_the_name_is_encoded_in(
    judge: Any, name: bytes, shown: str
) -> None:
    """Neither bytes that are not UTF-8 nor full-width digits hide a number in a name. A name in a
    legacy encoding is judged decoded; where it matched in the bytes is then unknown, so all of it is
    masked."""
    judged, runs = judge.judge_relative_name(name)
    assert {f.type for run in runs for f in run.findings} == {"CREDIT_CARD"}
    text, data = redact_path("/in", name, judged)
    assert text == "/in/" + shown
    assert CARD.encode() not in data and "1111111111" not in text


def test_a_name_nobody_judged_is_masked_whole() -> None:
    """Fail closed: a path whose name was not judged (judging raised) shows no part of the name."""
    text, data = redact_path("/in", "sub/card-" + CARD, None)
    assert text == "/in/[******1111]" and data == text.encode()
    other = JudgedName(b"other.txt")
    assert redact_path("/in", "card-" + CARD, other)[0] == "/in/[******1111]"


def test_a_name_a_detector_failed_on_is_masked_whole() -> None:
    assert JudgedName(b"whatever-" + CARD.encode(), hidden=True).show() == "[******1111]"


# ------------------------------------------------------------------------------------------ scan


def test_scan_reports_the_name_finding_and_never_the_raw_name(tmp_path: Path, write_config: Any) -> None:
    """`dropwarden scan` in every format: a clean file named with a card number is a finding, and the
    number is in none of its output (a file argument or a directory)."""
    folder = tmp_path / "drop"
    folder.mkdir()
    target = folder / f"card-{CARD}.txt"
    target.write_text(CLEAN)
    config = write_config()
    for fmt in ("text", "json", "jsonl"):
        for argument in (folder, target):
            result = run_cli("scan", "--config", str(config), "--format", fmt, str(argument))
            assert result.returncode == 1, result.stdout + result.stderr
            output = result.stdout + result.stderr
            assert "card-[******1111].txt" in output, output
            for raw in RAW:
                assert raw not in output, (fmt, output)
    report = json.loads(run_cli("scan", "--config", str(config), "--format", "json", str(folder)).stdout)
    (finding,) = report["files"][0]["findings"]
    assert finding["type"] == "CREDIT_CARD" and finding["location"]["view"] == "name:words"


def test_scan_prints_names_that_look_like_markup_as_they_are(tmp_path: Path, write_config: Any) -> None:
    """Regression: the text report read names as rich markup, so `[/]z.txt` stopped it with a
    MarkupError and `[bold red]y.txt` was printed styled, without its brackets."""
    (tmp_path / "drop" / "[").mkdir(parents=True)
    (tmp_path / "drop" / "[" / "]z.txt").write_text(CLEAN)
    (tmp_path / "drop" / "[bold red]y.txt").write_text(CLEAN)
    result = run_cli("scan", "--config", str(write_config()), str(tmp_path / "drop"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[/]z.txt" in result.stdout and "[bold red]y.txt" in result.stdout


# ------------------------------------------------------------------------------------------ daemon


def daemon_config(root: Path, extra: str = "") -> dict[str, Path]:
    paths = {
        "inbox": root / "drop" / "inbox",
        "outbound": root / "drop" / "outbound",
        "quarantine": root / "drop" / ".quarantine",
        "alerts": root / "log" / "alerts.jsonl",
        "audit": root / "log" / "audit.jsonl",
        "state": root / "state",
        "config": root / "dropwarden.toml",
    }
    paths["inbox"].mkdir(parents=True)
    paths["config"].write_text(
        f'[state]\ndir = "{paths["state"]}"\n[audit]\npath = "{paths["audit"]}"\n'
        f'[metrics]\nlisten = "127.0.0.1:0"\n[daemon]\nsettle_stat = 0.3\n'
        f'[[watch]]\nname = "inbox"\npath = "{paths["inbox"]}"\nquarantine_dir = "{paths["quarantine"]}"\n'
        f'release_to = "{paths["outbound"]}"\n{extra}'
        f'[[alerts.sink]]\ntype = "jsonl"\npath = "{paths["alerts"]}"\n'
    )
    return paths


def test_the_daemon_keeps_a_number_in_a_name_out_of_every_output_but_the_sidecar(tmp_path: Path) -> None:
    """A clean file named `card-4111111111111111.txt`, and one whose name is not UTF-8, dropped into
    a watched folder: each is a finding, quarantined and alerted; the number is in no audit record
    (`path` nor `path_b64`), no alert, not the daemon's log, not its metrics — only in the
    quarantine sidecar (0600), whose exact path bytes restore needs."""
    paths = daemon_config(tmp_path)
    daemon = DaemonProcess(paths["config"], paths["audit"]).start()
    names = [f"card-{CARD}.txt".encode(), b"sub/card-" + CARD.encode() + b"-\xff.txt"]
    try:
        (paths["inbox"] / "sub").mkdir()
        for name in names:
            with open(os.fsencode(paths["inbox"]) + b"/" + name, "wb") as handle:
                handle.write(CLEAN.encode())
        sidecars = daemon.wait_for(
            lambda: (
                len(list(paths["quarantine"].glob("*.json"))) == 2
                and list(paths["quarantine"].glob("*.json"))
            ),
            what="two quarantined files",
        )
        daemon.wait_for(
            lambda: paths["alerts"].exists() and len(paths["alerts"].read_text().splitlines()) == 2,
            what="two alerts",
        )
        assert all(sidecar.stat().st_mode & 0o777 == 0o600 for sidecar in sidecars)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port(daemon)}/metrics", timeout=10
        ) as response:
            metrics = response.read().decode()
    finally:
        daemon.stop()

    # The operator restores one and purges the other: their audit records mask the name too.
    ids = [json.loads(sidecar.read_text())["id"] for sidecar in sidecars]
    originals = {base64.b64decode(json.loads(s.read_text())["original_path_b64"]) for s in sidecars}
    restored_to = tmp_path / "restored"
    restored_to.mkdir()
    config = str(paths["config"])
    restore = run_cli("quarantine", "restore", ids[0], "--to", str(restored_to), "--config", config)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    purge = run_cli("quarantine", "purge", ids[1], "--yes", "--config", config)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    operator = [
        r["body"] for r in daemon.records() if r["type"] in ("quarantine.restore", "quarantine.purge")
    ]
    assert len(operator) == 4 and all("[******1111]" in r["original_path"] for r in operator)
    destinations = [r["destination"] for r in operator if "destination" in r]
    assert len(destinations) == 2
    assert all(d.startswith(f"{restored_to}/card-[******1111]") for d in destinations), destinations

    decisions = [r["body"] for r in daemon.records("decision")]
    assert sorted(d["path"] for d in decisions) == sorted(
        [f"{paths['inbox']}/card-[******1111].txt", f"{paths['inbox']}/sub/card-[******1111]-\\xff.txt"]
    )
    assert all(d["outcome"] == "finding" for d in decisions)
    (odd,) = [d for d in decisions if "path_b64" in d]
    assert (
        base64.b64decode(odd["path_b64"]) == os.fsencode(paths["inbox"]) + b"/sub/card-[******1111]-\xff.txt"
    )
    alerts = [json.loads(line) for line in paths["alerts"].read_text().splitlines()]
    assert sorted(a["file"]["name"] for a in alerts) == [
        "card-[******1111]-\\xff.txt",
        "card-[******1111].txt",
    ]

    outputs = {
        "audit log": paths["audit"].read_text(),
        "alerts": paths["alerts"].read_text(),
        "daemon log": "\n".join(daemon.log_lines),
        "metrics": metrics,
    }
    for what, text in outputs.items():
        for raw in RAW:
            assert raw not in text, f"{raw!r} in the {what}"

    assert originals == {os.fsencode(paths["inbox"]) + b"/" + name for name in names}


def test_a_released_file_is_recorded_with_its_name_masked_too(tmp_path: Path) -> None:
    """Below the watch's threshold a name's finding does not stop the release, but the record of the
    release shows the name masked as the decision does; a name that is not UTF-8 is released and
    recorded like any other."""
    paths = daemon_config(tmp_path, 'min_severity = "high"\n')
    daemon = DaemonProcess(paths["config"], paths["audit"]).start()
    names = [b"mail-taro@example.jp.txt", b"notes-\xff.txt"]
    try:
        for name in names:
            with open(os.fsencode(paths["inbox"]) + b"/" + name, "wb") as handle:
                handle.write(CLEAN.encode())
        done = daemon.wait_for(
            lambda: len(daemon.records("action.done")) == 2 and daemon.records("action.done"),
            what="two releases",
        )
    finally:
        daemon.stop()
    assert sorted(os.listdir(os.fsencode(paths["outbound"]))) == sorted(names)
    decisions = {d["outcome"] for d in (r["body"] for r in daemon.records("decision"))}
    assert decisions == {"below_threshold", "clean"}
    assert sorted(r["body"]["to"] for r in done) == ["[******.txt]", "notes-\\xff.txt"]
    everything = paths["audit"].read_text() + "\n".join(daemon.log_lines)
    assert "taro@example.jp" not in everything


def test_an_unexpected_error_is_logged_without_its_message() -> None:
    """The pipeline's last-resort handler logs the error's type, errno and frames, never its text: an
    OSError's filename is the file's name, which may spell out a value."""
    from structlog.testing import capture_logs

    from dropwarden.pipeline import Pipeline
    from dropwarden.watch.settle import WorkItem

    pipeline = Pipeline.__new__(Pipeline)
    one_host = SimpleNamespace(remote=None)  # role "all": judged here
    Pipeline.__init__(pipeline, one_host, None, None, None, lambda *args: None)  # type: ignore[arg-type]

    def fail(item: WorkItem, ctx: Any, decided: list, flights: list | None) -> None:
        raise FileNotFoundError(2, "No such file or directory", f"/in/card-{CARD}.txt")

    pipeline._process = fail  # type: ignore[method-assign]
    with capture_logs() as logs:
        pipeline.process(WorkItem("inbox", f"card-{CARD}.txt", "event"))
    (entry,) = [e for e in logs if e["event"] == "pipeline error"]
    assert entry["error"] == "FileNotFoundError" and entry["errno"] == "ENOENT" and entry["where"]
    assert CARD not in json.dumps(entry, default=str)
