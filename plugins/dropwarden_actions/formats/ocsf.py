"""OCSF Detection Finding (class 2004): the alert as an OCSF 1.x finding with file, rules and disposition.

Why 2004 and not Data Security Finding (2006): 2006 arrived late in OCSF 1.x and the maintained model the
tests validate against (py-ocsf-models) has no 2006 class; Detection Finding is the class SIEM OCSF
ingestion (Amazon Security Lake, Splunk, Sentinel's OCSF mapping) takes for a detector's alert, and its
security-control profile carries what dropwarden did (disposition: quarantined or detected).
"""

from __future__ import annotations

from typing import Any

from dropwarden.findings import Severity
from dropwarden_actions.formats.cef import _epoch_ms
from dropwarden_actions.formats.common import (
    compact_json,
    copy_json,
    rule_versions,
    severity_of,
    type_counts,
)

OCSF_VERSION = "1.1.0"
CLASS_UID, CATEGORY_UID, ACTIVITY_CREATE = 2004, 2, 1
SEVERITY_ID = {Severity.INFO: 1, Severity.LOW: 2, Severity.MEDIUM: 3, Severity.HIGH: 4, Severity.CRITICAL: 5}
DISPOSITION_QUARANTINED, DISPOSITION_DETECTED = 3, 15
SHA256_ALGORITHM_ID = 3


def ocsf_document(payload: dict[str, Any]) -> dict[str, Any]:
    """The OCSF Detection Finding of an alert payload (every attribute 2004 requires, and the file,
    rules, disposition; dropwarden's own fields under `unmapped.dropwarden`)."""
    event = payload.get("event") or {}
    file = payload.get("file") or {}
    meta = payload.get("dropwarden") or {}
    observer = payload.get("observer") or {}
    severity = severity_of(payload)
    millis = _epoch_ms(payload.get("@timestamp")) or 0
    alert_id = str(event.get("id", ""))
    action = str(event.get("action") or event.get("kind") or "alert")
    types = list(type_counts(payload))
    quarantined = "quarantine" in (meta.get("actions") or [])
    document: dict[str, Any] = {
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "time": millis,
        "severity_id": SEVERITY_ID[severity],
        "severity": str(severity).capitalize(),
        "status_id": 1,
        "status": "New",
        "message": str(event.get("reason") or action),
        "metadata": {
            "version": OCSF_VERSION,
            "uid": alert_id,
            "product": {
                "name": observer.get("product", "dropwarden"),
                "vendor_name": "dropwarden",
                "version": observer.get("version"),
            },
            "log_name": "alerts",
            "profiles": ["security_control", "host"],
            **({"sequence": meta["audit_seq"]} if isinstance(meta.get("audit_seq"), int) else {}),
        },
        "finding_info": {
            "uid": alert_id,
            "title": f"dropwarden {action}" + (f": {', '.join(types)}" if types else ""),
            "types": types or [action],
            "created_time": millis,
            "data_sources": ["file"],
            **_analytic(payload),
        },
        "action_id": 2 if quarantined else 99,
        "action": "Denied" if quarantined else "Other",
        "disposition_id": DISPOSITION_QUARANTINED if quarantined else DISPOSITION_DETECTED,
        "disposition": "Quarantined" if quarantined else "Detected",
        "device": {"hostname": (payload.get("host") or {}).get("hostname"), "type_id": 0},
        "unmapped": {"dropwarden": copy_json(meta)},
    }
    if file:
        ocsf_file = _file(file)
        document["evidences"] = [{"file": ocsf_file, "name": "file"}]
        document["resources"] = [
            {"type": "file", "name": ocsf_file.get("name"), "uid": ocsf_file.get("path"), "data": ocsf_file}
        ]
    return document


def _analytic(payload: dict[str, Any]) -> dict[str, Any]:
    """Each rule that matched as an OCSF analytic: `version` its detector's version, `desc` the detector."""
    rules = rule_versions(payload)
    if not rules:
        return {}
    analytics = [
        {
            "name": rule,
            "uid": rule,
            "type_id": 1,
            "type": "Rule",
            **({"version": version} if version else {}),
            **({"desc": f"detector {detector}"} if detector else {}),
        }
        for rule, detector, version in rules
    ]
    return {"analytic": analytics[0], **({"related_analytics": analytics[1:]} if len(analytics) > 1 else {})}


def _file(file: dict[str, Any]) -> dict[str, Any]:
    """An OCSF `file` object: name, path, size, type (regular file) and SHA-256."""
    out: dict[str, Any] = {
        "name": file.get("name"),
        "path": file.get("path"),
        "type_id": 1,
        "type": "Regular File",
    }
    if isinstance(file.get("size"), int):
        out["size"] = file["size"]
    sha256 = (file.get("hash") or {}).get("sha256")
    if sha256:
        out["hashes"] = [{"algorithm_id": SHA256_ALGORITHM_ID, "algorithm": "SHA-256", "value": sha256}]
    return out


def ocsf_json(payload: dict[str, Any]) -> str:
    """The OCSF document as one line of ASCII JSON."""
    return compact_json(ocsf_document(payload))
