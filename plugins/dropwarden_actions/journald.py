"""The `journald` alert sink: one structured journal entry per alert over journald's native protocol."""

from __future__ import annotations

import socket
import struct
from typing import Any

from dropwarden_actions.settings import JournaldSinkSettings

# MESSAGE_ID of every dropwarden alert (a fixed 128-bit id, as `journalctl MESSAGE_ID=...` selects it).
ALERT_MESSAGE_ID = "5b0e6f1c9d2a4e83b7c4a1f0d3e92c67"
# syslog priority by ECS severity (1..99): info, notice, warning, error, critical.
_PRIORITY = ((99, 2), (73, 3), (47, 4), (21, 5), (0, 6))


def priority_of(ecs_severity: Any) -> int:
    value = ecs_severity if isinstance(ecs_severity, int) else 47
    return next(prio for floor, prio in _PRIORITY if value >= floor)


def entry_fields(payload: dict[str, Any]) -> dict[str, str]:
    """The journal fields of an alert: what it was about and why, never a value (the payload has none)."""
    event = payload.get("event", {})
    extra = payload.get("dropwarden", {})
    file = payload.get("file", {})
    types = sorted({str(f.get("type")) for f in extra.get("findings", [])})
    return {
        "MESSAGE": f"dropwarden {event.get('action', 'alert')}: {file.get('path', '')}"
        f" ({', '.join(types) or event.get('reason', '')})",
        "MESSAGE_ID": ALERT_MESSAGE_ID,
        "PRIORITY": str(priority_of(event.get("severity"))),
        "SYSLOG_IDENTIFIER": "dropwarden",
        "DROPWARDEN_ALERT_ID": str(event.get("id", "")),
        "DROPWARDEN_WATCH": str(extra.get("watch", "")),
        "DROPWARDEN_OUTCOME": str(event.get("action", "")),
        "DROPWARDEN_SHA256": str((file.get("hash") or {}).get("sha256", "")),
        "DROPWARDEN_FINDING_TYPES": ",".join(types),
        "DROPWARDEN_AUDIT_SEQ": str(extra.get("audit_seq", "")),
    }


def encode_entry(fields: dict[str, str]) -> bytes:
    """journald's native format: `KEY=value\\n`, or for a value holding a newline `KEY\\n`, its length as
    64-bit little-endian, the bytes, `\\n` (so no value can start another field)."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "backslashreplace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournaldSink:
    """A notify action: one datagram per alert to the journal's socket; `audit.head` events too."""

    kind = "notify"

    def __init__(self, settings: JournaldSinkSettings) -> None:
        self.id = settings.id
        self.socket_path = str(settings.socket)

    def describe(self) -> str:
        return f"write each alert as a structured journal entry ({self.socket_path})"

    def send(self, payload: dict[str, Any]) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(encode_entry(entry_fields(payload)), self.socket_path)

    def close(self) -> None:
        pass
