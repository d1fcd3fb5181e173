"""Per-sink filters (`min_severity`, `watches`, `types`): an alert a sink's filters leave out is never
queued for it, and the decision record says which sinks left it out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from dropwarden.act.alerts import filter_sinks
from dropwarden.findings import Severity
from dropwarden_actions.settings import JsonlSinkSettings

from .daemon_harness import DaemonProcess

PII = "Customer: jane.doe@example.org, card 4111 1111 1111 1111\n"
EMAIL_ONLY = "Write to jane.doe@example.org about the invoice.\n"


def sink(**filters) -> JsonlSinkSettings:
    return JsonlSinkSettings(type="jsonl", path=Path("/tmp/x.jsonl"), **filters)


def test_a_sink_without_filters_accepts_every_alert():
    assert sink().accepts("inbox", Severity.LOW, {"EMAIL"})


def test_min_severity_compares_with_the_alerts_highest_finding_severity():
    high_only = sink(min_severity="HIGH")
    assert high_only.min_severity == "high"
    assert high_only.accepts("inbox", Severity.CRITICAL, {"X"})
    assert not high_only.accepts("inbox", Severity.MEDIUM, {"X"})


def test_watches_and_types_must_each_match_and_types_ignore_case():
    picky = sink(watches=["hr"], types=["email"])
    assert picky.accepts("hr", Severity.MEDIUM, {"EMAIL", "IBAN"})
    assert not picky.accepts("finance", Severity.MEDIUM, {"EMAIL"})
    assert not picky.accepts("hr", Severity.MEDIUM, {"IBAN"})


def test_an_unknown_severity_is_a_configuration_error():
    with pytest.raises(ValidationError, match="unknown severity"):
        sink(min_severity="urgent")


def test_an_alert_without_findings_is_medium_and_of_type_unscanned():
    filters = {"a": sink(name="a", types=["unscanned"]), "b": sink(name="b", min_severity="high")}
    assert filter_sinks(["a", "b", "plugin-hook"], filters, "inbox", ()) == (["a", "plugin-hook"], ["b"])


def test_the_daemon_queues_an_alert_only_for_the_sinks_whose_filters_accept_it(tmp_path: Path):
    inbox, log = tmp_path / "inbox", tmp_path / "log"
    inbox.mkdir()
    audit = log / "audit.jsonl"
    sinks = {
        "everything": "",
        "high": 'min_severity = "high"\n',
        "email": 'types = ["email"]\n',
        "elsewhere": 'watches = ["other"]\n',
    }
    config = tmp_path / "dropwarden.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n[audit]\npath = "{audit}"\n[metrics]\nlisten = ""\n'
        f'[[watch]]\nname = "inbox"\npath = "{inbox}"\nquarantine_dir = "{tmp_path / "q"}"\n'
        + "".join(
            f'[[alerts.sink]]\ntype = "jsonl"\nname = "{name}"\npath = "{log / name}.jsonl"\n{extra}'
            for name, extra in sinks.items()
        )
    )
    daemon = DaemonProcess(config, audit).start()
    try:
        (inbox / "card.txt").write_text(PII)  # EMAIL (medium) and CREDIT_CARD (high)
        (inbox / "mail.txt").write_text(EMAIL_ONLY)  # EMAIL (medium) only
        daemon.wait_for(
            lambda: (
                len(daemon.records("decision")) == 2
                and all((log / f"{n}.jsonl").exists() for n in ("everything", "high", "email"))
            ),
            what="both files judged and alerted",
        )
        daemon.wait_for(
            lambda: len((log / "everything.jsonl").read_text().splitlines()) == 2, what="both delivered"
        )
    finally:
        daemon.stop()

    def names(sink_name: str) -> list[str]:
        path = log / f"{sink_name}.jsonl"
        if not path.exists():
            return []
        return sorted(json.loads(line)["file"]["name"] for line in path.read_text().splitlines())

    assert names("everything") == ["card.txt", "mail.txt"]
    assert names("high") == ["card.txt"]
    assert names("email") == ["card.txt", "mail.txt"]
    assert names("elsewhere") == []
    (mail,) = (d["actions"] for d in daemon.decisions_for("mail.txt"))
    assert {"op": "alert.filtered", "sinks": ["high", "elsewhere"]} in mail
