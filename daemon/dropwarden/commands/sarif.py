"""`scan --format sarif`: the scan's records as one SARIF 2.1.0 log, for CI pipelines and code scanning.

Each finding is a result of its rule (`ruleId`, the rule's index in `tool.driver.rules`), its level from
the severity, its location the file (`artifactLocation.uri`, the line and column of a text view) and,
inside a container, the path to the part as a logical location. The message holds the finding type and
its masked excerpt, never the value; `partialFingerprints` the keyed fingerprint. A file that could not
be judged is a result of the rule `dropwarden.unscanned` with its reason.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from dropwarden import __version__

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
UNSCANNED_RULE = "dropwarden.unscanned"
_LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}


def sarif_log(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The SARIF log of `scan`'s file records (see scan.file_record)."""
    rules: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for record in results:
        uri = artifact_uri(record["path"])
        for finding in record["findings"]:
            rule = _rule(rules, finding["rule"], finding["type"], finding["severity"])
            out.append(_finding_result(finding, rule, uri))
        if record["verdict"] == "unscanned":
            rule = _rule(rules, UNSCANNED_RULE, "unscanned", "high")
            out.append(
                {
                    "ruleId": UNSCANNED_RULE,
                    "ruleIndex": rule,
                    "level": "error",
                    "kind": "fail",
                    "message": {"text": f"not judged: {record['reason'] or 'unscanned'}"},
                    "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}}}],
                }
            )
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "dropwarden",
                        "version": __version__,
                        "rules": list(rules.values()),
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": out,
            }
        ],
    }


def artifact_uri(path: str) -> str:
    """A URI reference for a shown (already masked) path: relative as given, absolute as file://."""
    if path.startswith("/"):
        return "file://" + quote(path, safe="/")
    return quote(str(PurePosixPath(path)), safe="/")


def _rule(rules: dict[str, dict[str, Any]], rule_id: str, finding_type: str, severity: str) -> int:
    if rule_id not in rules:
        rules[rule_id] = {
            "id": rule_id,
            "name": finding_type,
            "shortDescription": {"text": f"{finding_type} ({rule_id})"},
            "defaultConfiguration": {"level": _LEVELS.get(severity, "warning")},
            "properties": {"type": finding_type, "severity": severity},
        }
    return list(rules).index(rule_id)


def _finding_result(finding: dict[str, Any], rule_index: int, uri: str) -> dict[str, Any]:
    where = finding["location"]
    physical: dict[str, Any] = {"artifactLocation": {"uri": uri}}
    region = {
        key: where[name]
        for key, name in (("startLine", "line"), ("startColumn", "column"))
        if isinstance(where.get(name), int) and where[name] >= 1
    }
    if region:
        physical["region"] = region
    location: dict[str, Any] = {"physicalLocation": physical}
    within = where.get("within")
    if within:
        location["logicalLocations"] = [
            {"name": within[-1], "fullyQualifiedName": " > ".join(within), "kind": "member"}
        ]
    return {
        "ruleId": finding["rule"],
        "ruleIndex": rule_index,
        "level": _LEVELS.get(finding["severity"], "warning"),
        "message": {"text": f"{finding['type']} in view {where.get('view', '?')}: {finding['excerpt']}"},
        "locations": [location],
        "partialFingerprints": {"dropwardenFingerprint/v1": finding["fingerprint"]},
        "properties": {
            "type": finding["type"],
            "severity": finding["severity"],
            "confidence": finding["confidence"],
            "view": where.get("view"),
            **({"bbox": list(where["bbox"])} if where.get("bbox") else {}),
        },
    }
