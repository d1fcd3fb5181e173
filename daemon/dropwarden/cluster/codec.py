"""A judged snapshot's `Content` as JSON and back: what a judge host hands a watcher (no raw values)."""

from __future__ import annotations

import json
from typing import Any

from dropwarden.findings import Finding, Findings, Location, Severity
from dropwarden.judge.detect import DetectorRun
from dropwarden.judge.judge import Content
from dropwarden.judge.sniff import FileType
from dropwarden.verdict import Problem, Reason


def encode(content: Content) -> bytes:
    """`content` as compact JSON: findings as their audit-record form (excerpts redacted, fingerprints
    keyed), so the verdict cache holds nothing the audit log would not."""
    return json.dumps(
        {
            "type": [content.file_type.name, content.file_type.kind],
            "problems": [_problem(p) for p in content.problems],
            "runs": [_run(run) for run in content.runs],
            "unjudged": _problem(content.unjudged) if content.unjudged else None,
        },
        separators=(",", ":"),
    ).encode()


def decode(raw: bytes | str) -> Content:
    """The `Content` that `encode` wrote; ValueError (KeyError, TypeError) when it is not that."""
    data = json.loads(raw)
    return Content(
        FileType(*data["type"]),
        [_unproblem(p) for p in data["problems"]],
        [_unrun(run) for run in data["runs"]],
        _unproblem(data["unjudged"]) if data["unjudged"] else None,
    )


def _problem(problem: Problem) -> list[str]:
    return [problem.reason.value, problem.detail, problem.source]


def _unproblem(value: list[str]) -> Problem:
    return Problem(Reason(value[0]), value[1], value[2])


def _run(run: DetectorRun) -> dict[str, Any]:
    findings = run.findings
    return {
        "detector": run.detector,
        "version": run.version,
        "view": run.view,
        "ms": run.duration_ms,
        "findings": [f.to_dict() for f in findings],
        "omitted": [[t, int(s), n] for (t, s), n in getattr(findings, "omitted", {}).items()],
        "inexact": sorted(getattr(findings, "inexact", ())),
        "problem": _problem(run.problem) if run.problem else None,
    }


def _unrun(value: dict[str, Any]) -> DetectorRun:
    omitted = {(t, Severity(s)): n for t, s, n in value["omitted"]}
    findings = Findings((_finding(f) for f in value["findings"]), omitted, value["inexact"])
    problem = _unproblem(value["problem"]) if value["problem"] else None
    return DetectorRun(value["detector"], value["version"], value["view"], value["ms"], findings, problem)


def _finding(value: dict[str, Any]) -> Finding:
    location = dict(value["location"])
    if "bbox" in location:
        location["bbox"] = tuple(location["bbox"])
    if "within" in location:
        location["within"] = tuple(location["within"])
    return Finding(
        type=value["type"],
        rule=value["rule"],
        detector=value["detector"],
        detector_version=value["detector_version"],
        severity=Severity.parse(value["severity"]),
        confidence=value["confidence"],
        location=Location(**location),
        excerpt=value["excerpt"],
        fingerprint=value["fingerprint"],
        extra=value.get("extra", {}),
    )
