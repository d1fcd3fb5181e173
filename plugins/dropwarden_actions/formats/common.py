"""What the formats share: the alert's severity, its fields read defensively, text made safe."""

from __future__ import annotations

import json
import re
from typing import Any

from dropwarden.findings import Severity

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def severity_of(payload: dict[str, Any]) -> Severity:
    """The alert's severity: its highest finding's; medium for an alert without findings (unscanned),
    info for an event that is no alert (`audit.head`)."""
    event = payload.get("event") or {}
    if event.get("kind") != "alert":
        return Severity.INFO
    names = [str(f.get("severity", "")) for f in findings_of(payload)]
    parsed = []
    for name in names:
        try:
            parsed.append(Severity.parse(name))
        except ValueError:
            continue
    return max(parsed, default=Severity.MEDIUM)


def findings_of(payload: dict[str, Any]) -> list[dict[str, Any]]:
    findings = (payload.get("dropwarden") or {}).get("findings") or []
    return [f for f in findings if isinstance(f, dict)]


def type_counts(payload: dict[str, Any]) -> dict[str, int]:
    """Finding type -> how many were made (the payload's `counts` where given, else those it lists)."""
    counts: dict[str, int] = {}
    for finding in findings_of(payload):
        counts[str(finding.get("type"))] = counts.get(str(finding.get("type")), 0) + 1
    for row in (payload.get("dropwarden") or {}).get("counts") or []:
        if isinstance(row, dict) and isinstance(row.get("count"), int):
            counts[str(row.get("type"))] = max(row["count"], counts.get(str(row.get("type")), 0))
    return dict(sorted(counts.items()))


def rule_versions(payload: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(rule, detector id, detector version) of each rule that matched, sorted by rule: the first
    finding's detector where several made the same rule."""
    seen: dict[str, tuple[str, str, str]] = {}
    for finding in findings_of(payload):
        rule = str(finding.get("rule"))
        seen.setdefault(
            rule, (rule, str(finding.get("detector") or ""), str(finding.get("detector_version") or ""))
        )
    return [seen[rule] for rule in sorted(seen)]


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON-shaped value (dicts, lists, scalars), several times faster than deepcopy."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


def one_line(text: Any, limit: int = 4096) -> str:
    """`text` as a string that cannot break a line-based frame: every control character (and U+2028/9)
    replaced by U+FFFD, lone surrogates too, at most `limit` characters."""
    text = str(text)
    if text.isascii() and text.isprintable():  # the common case: nothing to replace (no regex pass)
        return text[:limit]
    text = _SURROGATE.sub("\ufffd", text)
    return _CONTROL.sub("\ufffd", text)[:limit]


def safe_text(text: Any) -> str:
    """`text` as a string that encodes as UTF-8 (lone surrogates replaced); control characters kept."""
    return _SURROGATE.sub("\ufffd", str(text))


def compact_json(document: Any) -> str:
    """One line of JSON, ASCII only: every control character, quote and non-ASCII character escaped."""
    return json.dumps(document, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)
