"""ECS: the alert payload completed with the ECS fields SIEMs index on (rule.*, file.*, host.*, event.*)."""

from __future__ import annotations

import posixpath
from typing import Any

from dropwarden_actions.formats.common import (
    compact_json,
    copy_json,
    findings_of,
    rule_versions,
    severity_of,
    type_counts,
)


def ecs_document(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of the payload with `rule` (the detector rules that matched: `rule.id`, and `rule.version`
    in the same order, each the version of the detector that made that rule), `file.directory` and
    `file.extension`, `host.name`, and `event.created`/`dataset`/`module`/`outcome` added."""
    document = copy_json(payload)
    event = document.setdefault("event", {})
    event.setdefault("created", document.get("@timestamp"))
    event.setdefault("module", "dropwarden")
    event.setdefault("dataset", f"dropwarden.{event.get('kind', 'alert')}")
    event.setdefault("outcome", "success")
    findings = findings_of(payload)
    if findings:
        rules = rule_versions(payload)
        document["rule"] = {
            "id": [rule for rule, _, _ in rules],
            "name": [rule for rule, _, _ in rules],
            "version": [version for _, _, version in rules],
            "category": sorted(type_counts(payload)),
            "ruleset": "dropwarden",
        }
    file = document.get("file")
    if isinstance(file, dict) and isinstance(file.get("path"), str):
        file.setdefault("directory", posixpath.dirname(file["path"]))
        extension = posixpath.splitext(file.get("name") or "")[1].lstrip(".")
        if extension:
            file.setdefault("extension", extension)
    host = document.setdefault("host", {})
    if host.get("hostname"):
        host.setdefault("name", host["hostname"])
    document.setdefault("log", {})["level"] = str(severity_of(payload))
    return document


def ecs_json(payload: dict[str, Any]) -> str:
    """The ECS document as one line of ASCII JSON."""
    return compact_json(ecs_document(payload))
