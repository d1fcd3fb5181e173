"""The journald sink writes journald's native protocol; here to a datagram socket the test binds, read
back and parsed as journald parses it: one entry per alert, MESSAGE_ID, PRIORITY, DROPWARDEN_* fields,
never a raw value, and a hostile name cannot add a field."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from dropwarden.findings import Severity
from dropwarden_actions.journald import ALERT_MESSAGE_ID, JournaldSink
from dropwarden_actions.settings import JournaldSinkSettings

from .alert_samples import SECRET_CARD, card_finding, sample_alert

CARD = SECRET_CARD


def parse_native(data: bytes) -> dict[str, str]:
    """journald's reading of a native datagram (KEY=value lines; KEY, 64-bit length, bytes)."""
    fields: dict[str, str] = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            data = rest
        else:
            key, (size,) = line, struct.unpack("<Q", rest[:8])
            value, data = rest[8 : 8 + size], rest[8 + size + 1 :]
        assert key.decode() not in fields, f"field {key!r} given twice"
        fields[key.decode()] = value.decode()
    return fields


def alert(path: str) -> dict:
    card = card_finding(severity=Severity.CRITICAL)
    return sample_alert("alert-7", path=path, size=10, findings=(card,), audit_seq=99)


def receive_one(tmp_path: Path, payload: dict) -> dict[str, str]:
    path = tmp_path / "journal.socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        JournaldSink(JournaldSinkSettings(type="journald", socket=path)).send(payload)
        return parse_native(server.recv(1 << 20))


def test_an_alert_is_one_structured_journal_entry_without_the_value(tmp_path):
    fields = receive_one(tmp_path, alert("/srv/inbox/a.txt"))
    assert fields["MESSAGE_ID"] == ALERT_MESSAGE_ID and len(ALERT_MESSAGE_ID) == 32
    assert fields["PRIORITY"] == "2"  # critical
    assert fields["DROPWARDEN_ALERT_ID"] == "alert-7" and fields["DROPWARDEN_WATCH"] == "inbox"
    assert fields["DROPWARDEN_OUTCOME"] == "finding" and fields["DROPWARDEN_SHA256"] == "ab" * 32
    assert fields["DROPWARDEN_FINDING_TYPES"] == "CREDIT_CARD" and fields["DROPWARDEN_AUDIT_SEQ"] == "99"
    assert "/srv/inbox/a.txt" in fields["MESSAGE"]
    assert not any(CARD in value for value in fields.values())


def test_a_hostile_file_name_cannot_add_a_journal_field(tmp_path):
    fields = receive_one(tmp_path, alert("/srv/inbox/x\nPRIORITY=7\nDROPWARDEN_WATCH=evil.txt"))
    assert fields["PRIORITY"] == "2" and fields["DROPWARDEN_WATCH"] == "inbox"
    assert "PRIORITY=7" in fields["MESSAGE"]  # kept inside MESSAGE, binary-safe
