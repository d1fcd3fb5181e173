"""`dropwarden scan` end to end: a real tree with encodings, binaries, links and a FIFO."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import run_cli

PII_JA = "山田様\nマイナンバー: 1234 5678 9018\n携帯 090-1234-5678 までご連絡ください。\n"
PII_EN = "Please wire the refund to jane.doe@example.org, reference 4111 1111 1111 1111.\n"
CLEAN = "Meeting notes: the build is green, order #20231104-7781 ships Tuesday.\n"


@pytest.fixture
def tree(tmp_path: Path, tmp_path_factory) -> Path:
    root = tmp_path / "drop"
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "utf8.txt").write_text(PII_EN, encoding="utf-8")
    (root / "sjis.txt").write_bytes(PII_JA.encode("shift_jis"))
    (root / "nested" / "eucjp.txt").write_bytes(PII_JA.encode("euc_jp"))
    (root / "nested" / "utf16.txt").write_bytes(PII_EN.encode("utf-16"))
    (root / "nested" / "deeper" / "clean.txt").write_text(CLEAN)
    (root / "program.bin").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8)
    (root / "empty.txt").write_bytes(b"")
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text(PII_EN)
    (root / "link.txt").symlink_to(outside)
    (root / "linked-dir").symlink_to(outside.parent, target_is_directory=True)
    os.mkfifo(root / "pipe")
    with open(os.path.join(os.fsencode(root), b"odd\nname\xff.txt"), "wb") as handle:
        handle.write(PII_EN.encode())
    return root


def scan(*args: str, config: Path) -> tuple[int, str, str]:
    result = run_cli("scan", "--config", str(config), *args, timeout=60)
    return result.returncode, result.stdout, result.stderr


def test_scan_judges_every_file_in_a_tree_and_reports_json(tree, write_config):
    code, out, err = scan("--format", "json", str(tree), config=write_config())
    assert code == 1, err
    report = json.loads(out)
    files = {Path(f["path"]).relative_to(tree).as_posix(): f for f in report["files"]}

    for name in ("utf8.txt", "nested/utf16.txt"):
        assert {f["type"] for f in files[name]["findings"]} >= {"EMAIL", "CREDIT_CARD"}, name
    for name in ("sjis.txt", "nested/eucjp.txt"):
        assert {f["type"] for f in files[name]["findings"]} >= {"JP_MY_NUMBER", "PHONE"}, name
    assert files["nested/deeper/clean.txt"]["verdict"] == "clean"
    assert files["empty.txt"]["verdict"] == "clean"

    assert files["program.bin"]["verdict"] == "unscanned"
    assert "binary" in files["program.bin"]["reason"] or "elf" in files["program.bin"]["reason"]
    assert files["link.txt"]["verdict"] == "unscanned" and "symlink" in files["link.txt"]["reason"]
    assert files["linked-dir"]["verdict"] == "unscanned" and "symlink" in files["linked-dir"]["reason"]
    assert files["pipe"]["verdict"] == "unscanned" and "fifo" in files["pipe"]["reason"]
    assert files["odd\nname\\xff.txt"]["verdict"] == "finding"
    assert not any("outside" in path or "secret.txt" in path for path in files), "a link was followed"

    summary = report["summary"]
    assert summary["files"] == len(report["files"]) == 11
    assert summary["finding"] == 5
    assert summary["findings_by_type"]["EMAIL"] == 3


def test_findings_carry_the_documented_fields_and_never_the_raw_value(tree, write_config):
    _, out, _ = scan("--format", "json", str(tree / "utf8.txt"), config=write_config())
    (record,) = json.loads(out)["files"]
    assert set(record) >= {"path", "verdict", "reason", "sha256", "findings"}
    for finding in record["findings"]:
        assert set(finding) == {
            "type",
            "rule",
            "severity",
            "confidence",
            "location",
            "excerpt",
            "fingerprint",
        }
        assert finding["location"]["line"] == 1
    assert "jane.doe" not in out and "4111 1111 1111 1111" not in out and "4111111111111111" not in out


def test_jsonl_prints_one_file_per_line(tree, write_config):
    code, out, _ = scan("--format", "jsonl", str(tree / "nested"), config=write_config())
    lines = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["path"]).name for r in lines] == ["clean.txt", "eucjp.txt", "utf16.txt"]
    assert code == 1


def test_text_output_is_a_table_with_a_summary(tree, write_config):
    code, out, _ = scan(str(tree / "utf8.txt"), str(tree / "nested" / "deeper"), config=write_config())
    assert code == 1
    assert "finding" in out and "CREDIT_CARD" in out and "clean" in out
    assert "2 files: 1 clean, 1 with findings, 0 unscanned" in out


def test_exit_codes_distinguish_clean_unscanned_and_usage_errors(tree, write_config):
    config = write_config()
    assert scan(str(tree / "nested" / "deeper"), config=config)[0] == 0
    assert scan(str(tree / "program.bin"), str(tree / "nested" / "deeper"), config=config)[0] == 3
    assert scan(str(tree / "pipe"), config=config)[0] == 3
    assert scan("--format", "yaml", str(tree), config=config)[0] == 2
    bad = write_config("[limits]\nmax_file_size = 'huge'\n", name="bad.toml")
    assert scan(str(tree), config=bad)[0] == 2


def test_a_file_over_the_size_limit_is_unscanned_too_large(tree, write_config):
    config = write_config("[limits]\nmax_file_size = 10\n")
    code, out, _ = scan("--format", "json", str(tree / "utf8.txt"), config=config)
    assert code == 3
    assert json.loads(out)["files"][0]["reason"].startswith("intake: too_large")
