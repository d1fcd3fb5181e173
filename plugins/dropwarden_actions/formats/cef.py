"""CEF (ArcSight Common Event Format): one `CEF:0|...|` line per alert, every field escaped."""

from __future__ import annotations

import calendar
import time
from typing import Any

from dropwarden.findings import Severity
from dropwarden_actions.formats.common import findings_of, one_line, rule_versions, severity_of, type_counts

CEF_SEVERITY = {
    Severity.INFO: 1,
    Severity.LOW: 3,
    Severity.MEDIUM: 5,
    Severity.HIGH: 8,
    Severity.CRITICAL: 10,
}

# Custom string fields: (key, label, what it holds). README's CEF table lists these.
CUSTOM_STRINGS = (
    ("cs1", "watch", "the watch's id"),
    ("cs2", "findingTypes", "finding types with counts, TYPE:COUNT comma-separated"),
    ("cs3", "rules", "the detector rules that matched, comma-separated"),
    ("cs4", "fingerprints", "the findings' keyed fingerprints, comma-separated"),
    ("cs5", "auditHead", "the audit chain head when raised, LOG_ID:SEQ:HASH"),
    ("cs6", "reason", "why (the reason of an unscanned file, else the finding types)"),
    ("flexString1", "ruleVersions", "each rule with its detector and version, RULE@DETECTOR/VERSION"),
)


def header_escape(value: Any) -> str:
    """A header field: `\\` and `|` backslash-escaped; no control character (each becomes U+FFFD)."""
    return one_line(value, 512).replace("\\", "\\\\").replace("|", "\\|")


def extension_escape(value: Any) -> str:
    """An extension value: `\\` and `=` backslash-escaped, CR and LF as `\\r` and `\\n`, any other
    control character U+FFFD."""
    text = str(value).replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")
    return one_line(text, 8192)


def cef_line(payload: dict[str, Any]) -> str:
    """`CEF:0|dropwarden|dropwarden|VERSION|SIGNATURE|NAME|SEVERITY|EXTENSION`: signature the verdict
    (`finding`, `unscanned`) or event action (`audit.head`); severity 1 (info) .. 10 (critical)."""
    event = payload.get("event") or {}
    observer = payload.get("observer") or {}
    file = payload.get("file") or {}
    meta = payload.get("dropwarden") or {}
    findings = findings_of(payload)
    signature = event.get("action") or event.get("kind") or "alert"
    reason = event.get("reason") or ""
    name = f"dropwarden {signature}: {reason}" if reason else f"dropwarden {signature}"
    header = [
        "CEF:0",
        header_escape(observer.get("vendor", "dropwarden")),
        header_escape(observer.get("product", "dropwarden")),
        header_escape(observer.get("version", "")),
        header_escape(signature),
        header_escape(name),
        str(CEF_SEVERITY[severity_of(payload)]),
    ]
    head = meta.get("audit_head") or {}
    extension: list[tuple[str, Any]] = [
        ("rt", _epoch_ms(payload.get("@timestamp"))),
        ("externalId", event.get("id")),
        ("dvchost", (payload.get("host") or {}).get("hostname")),
        ("outcome", meta.get("verdict")),
        ("act", ",".join(meta.get("actions") or [])),
        ("fname", file.get("name")),
        ("filePath", file.get("path")),
        ("fileHash", (file.get("hash") or {}).get("sha256")),
        ("fsize", file.get("size")),
        ("cn1", meta.get("audit_seq")),
        ("cn1Label", "auditSeq" if meta.get("audit_seq") is not None else None),
    ]
    values = {
        "cs1": meta.get("watch"),
        "cs2": ",".join(f"{kind}:{count}" for kind, count in type_counts(payload).items()),
        "cs3": ",".join(sorted({str(f.get("rule")) for f in findings})),
        "cs4": ",".join(str(f.get("fingerprint")) for f in findings if f.get("fingerprint")),
        "cs5": ":".join(str(head[k]) for k in ("log_id", "seq", "hash") if k in head),
        "cs6": reason,
        "flexString1": ",".join(f"{rule}@{det}/{version}" for rule, det, version in rule_versions(payload)),
    }
    for key, label, _ in CUSTOM_STRINGS:
        if values[key] not in (None, ""):
            extension += [(key, values[key]), (f"{key}Label", label)]
    pairs = " ".join(
        f"{key}={extension_escape(value)}" for key, value in extension if value not in (None, "")
    )
    return "|".join(header) + "|" + pairs


def _epoch_ms(timestamp: Any) -> int | None:
    """`2024-05-01T10:00:00.123Z` as milliseconds since the epoch."""
    if not isinstance(timestamp, str) or not timestamp.endswith("Z"):
        return None
    try:
        whole, _, fraction = timestamp[:-1].partition(".")
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    return seconds * 1000 + int((fraction + "000")[:3] or 0)
