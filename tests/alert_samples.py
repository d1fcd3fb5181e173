"""Alerts built as the daemon builds them, for the sink and format tests: every finding carries a raw card
number where a careless detector might leave one, so each test can check that no sink ever sends it."""

from __future__ import annotations

from dropwarden.act.alerts import alert_payload
from dropwarden.findings import Finding, Location, Severity

SECRET_CARD = "4111111111111111"


def card_finding(
    kind: str = "CREDIT_CARD",
    severity: Severity = Severity.HIGH,
    *,
    detector: tuple[str, str] = ("regex", "1"),
    confidence: float = 0.9,
    location: Location | None = None,
) -> Finding:
    """A finding of `kind` whose excerpt and extra both hold the raw value (the sinks must drop both)."""
    return Finding(
        type=kind,
        rule=kind.lower(),
        detector=detector[0],
        detector_version=detector[1],
        severity=severity,
        confidence=confidence,
        location=location or Location("text", line=1, column=1, offset=0, length=16),
        excerpt=f"card {SECRET_CARD}",
        fingerprint="f" * 16,
        extra={"value": SECRET_CARD},
    )


def sample_alert(alert_id: str = "alert-1", **overrides: object) -> dict:
    """An alert about one file with a card finding; any field of `alert_payload` can be overridden."""
    fields: dict = {
        "alert_id": alert_id,
        "watch": "inbox",
        "path": "/srv/inbox/scan.txt",
        "sha256": "ab" * 32,
        "size": 123,
        "outcome": "finding",
        "reason": None,
        "findings": (card_finding(),),
        "actions": ("quarantine", "alert"),
        "audit_seq": 42,
    }
    fields.update(overrides)
    return alert_payload(**fields)
