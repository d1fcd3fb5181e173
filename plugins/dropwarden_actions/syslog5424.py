"""RFC 5424 syslog messages of alert payloads: header, a private structured-data element, the formatted
alert as MSG, bounded in size."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from typing import Any

from dropwarden.findings import Severity
from dropwarden_actions.formats import render
from dropwarden_actions.formats.common import one_line, severity_of

# 32473 is the enterprise number RFC 5612 reserves for documentation: dropwarden has no registered one.
SD_ID = "dropwarden@32473"
FACILITY_LOG_AUDIT = 13
SYSLOG_SEVERITY = {
    Severity.CRITICAL: 2,
    Severity.HIGH: 3,
    Severity.MEDIUM: 4,
    Severity.LOW: 5,
    Severity.INFO: 6,
}
UDP_MAX_BYTES = 8192  # rsyslog's and syslog-ng's default largest message; well under a datagram's 65,507
STREAM_MAX_BYTES = 65536
SD_VALUE_MAX_CHARS = 1024
_PRINTUSASCII_NOT = re.compile(r"[^\x21-\x7e]")


def sd_escape(value: Any) -> str:
    """A PARAM-VALUE per RFC 5424 §6.3.3: `"`, `\\` and `]` backslash-escaped; control characters
    U+FFFD (so no value can end the element or the frame), at most 1024 characters."""
    text = one_line(value, SD_VALUE_MAX_CHARS)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def header_token(value: Any, limit: int) -> str:
    """A header field (HOSTNAME, MSGID): printable US-ASCII only, at most `limit`; `-` when empty."""
    text = _PRINTUSASCII_NOT.sub("_", str(value or ""))[:limit]
    return text or "-"


def syslog_message(payload: dict[str, Any], format_name: str, max_bytes: int) -> bytes:
    """`<PRI>1 TIMESTAMP HOSTNAME dropwarden PROCID MSGID [dropwarden@32473 ...] MSG` in UTF-8.

    PRI is facility 13 (log audit) with the severity of the alert (critical 2 .. info 6); MSGID the
    event's action (`finding`, `unscanned`, `audit.head`). When the whole is longer than `max_bytes`,
    MSG is cut at a character boundary to fit and the element gets `truncated="true"`: the header and
    the structured data (id, watch, verdict, severity, file, sha256, audit seq) are always whole."""
    severity = severity_of(payload)
    event = payload.get("event") or {}
    meta = payload.get("dropwarden") or {}
    file = payload.get("file") or {}
    pri = FACILITY_LOG_AUDIT * 8 + SYSLOG_SEVERITY[severity]
    header = " ".join(
        [
            f"<{pri}>1",
            _timestamp(payload.get("@timestamp")),
            header_token((payload.get("host") or {}).get("hostname"), 255),
            "dropwarden",
            str(os.getpid()),
            header_token(event.get("action") or event.get("kind"), 32),
        ]
    )
    params = {
        "id": event.get("id"),
        "kind": event.get("kind"),
        "watch": meta.get("watch"),
        "verdict": meta.get("verdict"),
        "severity": str(severity),
        "file": file.get("name"),
        "sha256": (file.get("hash") or {}).get("sha256"),
        "auditSeq": meta.get("audit_seq"),
        "format": format_name,
    }
    message = render(format_name, payload).encode("utf-8", "replace")
    element = _element(params)
    whole = f"{header} {element} ".encode() + message
    if len(whole) <= max_bytes:
        return whole
    prefix = f"{header} {_element({**params, 'truncated': 'true'})} ".encode()
    room = max(0, max_bytes - len(prefix))
    return prefix + message[:room].decode("utf-8", "ignore").encode()


def _element(params: dict[str, Any]) -> str:
    pairs = " ".join(
        f'{name}="{sd_escape(value)}"' for name, value in params.items() if value not in (None, "")
    )
    return f"[{SD_ID} {pairs}]"


def _timestamp(value: Any) -> str:
    """RFC 3339 with milliseconds in UTC: the alert's own time, else now."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z", value):
        return value
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
