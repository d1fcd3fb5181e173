"""Alerts: what an alert says (never a value) and how it reaches a sink (at least once, same id).

The dispatcher runs over a real State and a real jsonl sink in a temporary folder.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropwarden.act.alerts import AlertDispatcher, HeadBeacon, head_event_id
from dropwarden.config import AlertsSettings
from dropwarden.findings import Finding, Location, Severity
from dropwarden.state import DELIVERED_KEPT_SECONDS, State
from dropwarden_actions.settings import JsonlSinkSettings
from dropwarden_actions.sinks import JsonlSink

from .alert_samples import SECRET_CARD, card_finding, sample_alert

SECRET = SECRET_CARD
HEAD = {"log_id": "log-1", "seq": 41, "hash": "h" * 64, "checkpoint": {"seq": 40, "epoch": 2}}


def finding(kind: str, severity: Severity) -> Finding:
    where = Location("text", line=3, column=5, offset=40, length=16)
    return card_finding(kind, severity, confidence=0.98765, location=where)


def payload(alert_id: str = "alert-1", **overrides: object) -> dict:
    fields: dict = {
        "findings": (finding("CARD", Severity.HIGH), finding("EMAIL", Severity.LOW)),
        "audit_head": {"log_id": "log-1", "seq": 42, "hash": "h" * 64},
        "counts": [{"type": "CARD", "count": 7, "kept": 1, "severity": "high"}],
    }
    return sample_alert(alert_id, **(fields | overrides))


# ------------------------------------------------------------------------ what an alert says


def test_an_alert_is_an_ecs_alert_event_about_a_file():
    alert = payload()
    assert alert["ecs"]["version"] and alert["@timestamp"].endswith("Z")
    event = alert["event"]
    assert event["id"] == "alert-1" and event["kind"] == "alert" and event["action"] == "finding"
    assert event["category"] == ["file", "intrusion_detection"] and event["provider"] == "dropwarden"
    assert event["severity"] == 73  # the highest finding's (high)
    assert event["reason"] == "CARD, EMAIL"
    assert alert["file"] == {
        "path": "/srv/inbox/scan.txt",
        "name": "scan.txt",
        "size": 123,
        "hash": {"sha256": "ab" * 32},
    }
    assert alert["host"]["hostname"] and alert["observer"]["product"] == "dropwarden"


def test_an_alert_never_carries_a_value_only_where_it_was_and_its_keyed_fingerprint():
    alert = payload()
    assert SECRET not in json.dumps(alert)
    card = alert["dropwarden"]["findings"][0]
    assert card == {
        "type": "CARD",
        "rule": "card",
        "detector": "regex",
        "detector_version": "1",
        "severity": "high",
        "confidence": 0.988,
        "location": {"view": "text", "line": 3, "column": 5, "offset": 40, "length": 16},
        "fingerprint": "f" * 16,
    }


def test_an_alert_carries_the_audit_chain_head_and_the_finding_counts():
    ours = payload()["dropwarden"]
    assert ours["audit_seq"] == 42
    assert ours["audit_head"] == {"log_id": "log-1", "seq": 42, "hash": "h" * 64}
    assert ours["counts"] == [{"type": "CARD", "count": 7, "kept": 1, "severity": "high"}]
    assert ours["watch"] == "inbox" and ours["verdict"] == "finding"
    assert ours["actions"] == ["quarantine", "alert"]
    assert "counts" not in payload(counts=[])["dropwarden"]


def test_an_unscanned_file_alert_gives_its_reason_at_medium_severity():
    alert = payload(outcome="unscanned", reason="intake: too_large", findings=(), sha256=None, size=None)
    assert alert["event"]["reason"] == "intake: too_large" and alert["event"]["severity"] == 47
    assert alert["file"]["hash"] == {}


def test_the_audit_head_event_is_sent_once_per_head_with_a_stable_id(tmp_path: Path):
    state = State(tmp_path / "state.db")
    try:
        beacon = HeadBeacon(interval=0.01)
        time.sleep(0.02)
        assert beacon.tick(HEAD, state, ["siem"]) is True
        time.sleep(0.02)
        assert beacon.tick(HEAD, state, ["siem"]) is False  # the head has not moved
        assert HeadBeacon(interval=0).tick(HEAD, state, ["siem"]) is False
        (item,) = state.due_alerts(time.time())
        assert item.id == head_event_id(HEAD) == "audit-head-log-1-41"
        assert item.payload["event"]["action"] == "audit.head"
        assert item.payload["dropwarden"]["audit_head"] == {"log_id": "log-1", "seq": 41, "hash": "h" * 64}
        assert item.payload["dropwarden"]["audit_checkpoint"] == {"seq": 40, "epoch": 2}
    finally:
        state.close()


# ------------------------------------------------------------------------ delivery


class Outbox:
    """A State, a jsonl sink at `target` and its dispatcher, as the daemon wires them."""

    def __init__(
        self, tmp_path: Path, target: Path, *, retry_initial: float = 10, retry_max: float = 25
    ) -> None:
        self.path = tmp_path / "state" / "state.db"
        self.target = target
        self.settings = AlertsSettings(
            sink=[JsonlSinkSettings(type="jsonl", name="siem", path=target)],
            retry_initial=retry_initial,
            retry_max=retry_max,
        )
        self.health: list[tuple[str, str | None]] = []
        self.running = False
        self.open()

    def open(self) -> None:
        self.state = State(self.path)
        self.dispatcher = AlertDispatcher(
            self.state,
            {sink.id: JsonlSink(sink.id, sink.path) for sink in self.settings.sink},
            self.settings,
            lambda sink, problem: self.health.append((sink, problem)),
        )

    def restart(self) -> None:
        self.close()
        self.open()

    def start(self) -> None:
        self.dispatcher.start()
        self.running = True

    def close(self) -> None:
        if self.running:
            self.dispatcher.stop()
            self.running = False
        self.state.close()

    def raise_alert(self, alert_id: str) -> None:
        self.state.enqueue_alert(alert_id, ["siem"], payload(alert_id))

    def lines(self) -> list[dict]:
        if not self.target.exists():
            return []
        return [json.loads(line) for line in self.target.read_text().splitlines()]

    def row(self, alert_id: str) -> tuple[int, float, str | None]:
        """(attempts, seconds until the next attempt, last error) as stored."""
        db = sqlite3.connect(self.path)
        try:
            attempts, next_attempt, error = db.execute(
                "SELECT attempts, next_attempt, last_error FROM outbox WHERE id=?", (alert_id,)
            ).fetchone()
        finally:
            db.close()
        return attempts, next_attempt - time.time(), error

    def due_now(self, alert_id: str) -> None:
        """Time passes: the retry is due (written as another process would)."""
        db = sqlite3.connect(self.path)
        db.execute("UPDATE outbox SET next_attempt=0 WHERE id=?", (alert_id,))
        db.commit()
        db.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    made = Outbox(tmp_path, tmp_path / "alerts" / "alerts.jsonl")
    yield made
    made.close()


def test_a_raised_alert_is_appended_to_the_jsonl_sink_as_one_line(outbox: Outbox):
    outbox.target.parent.mkdir()
    outbox.raise_alert("a1")
    outbox.raise_alert("a2")
    assert outbox.dispatcher.deliver_due() == 2
    assert [line["event"]["id"] for line in outbox.lines()] == ["a1", "a2"]
    assert outbox.lines()[0]["dropwarden"] == payload("a1")["dropwarden"]
    assert outbox.state.outbox_depth() == 0
    assert outbox.dispatcher.deliver_due() == 0  # delivered once
    assert outbox.health == []


def test_a_delivered_alert_is_emptied_then_forgotten_so_state_does_not_grow_with_every_alert(outbox: Outbox):
    """A delivered row keeps only its id (for a day: an id enqueued again is not sent twice), then goes."""
    outbox.target.parent.mkdir()
    for index in range(50):
        outbox.raise_alert(f"a{index}")
    assert outbox.dispatcher.deliver_due() == 50
    db = sqlite3.connect(outbox.path)
    try:
        assert db.execute("SELECT count(*) FROM outbox WHERE payload != ''").fetchone()[0] == 0
        outbox.raise_alert("a7")  # the same id again: not sent twice
        assert outbox.dispatcher.deliver_due() == 0
        assert outbox.state.forget_delivered(time.time() - DELIVERED_KEPT_SECONDS) == 0  # a day not past
        assert outbox.state.forget_delivered(time.time() + 1) == 50
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    finally:
        db.close()
    assert len(outbox.lines()) == 50


def test_the_running_dispatcher_delivers_what_is_raised(outbox: Outbox):
    outbox.target.parent.mkdir()
    outbox.start()
    outbox.raise_alert("a1")
    outbox.dispatcher.kick()
    deadline = time.monotonic() + 5
    while not outbox.lines() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [line["event"]["id"] for line in outbox.lines()] == ["a1"]


def test_a_sink_whose_folder_is_missing_is_retried_with_growing_jittered_waits_up_to_retry_max(
    outbox: Outbox,
):
    """Each wait lies between half and all of its ceiling (retry_initial doubling, capped at retry_max):
    jitter, so that alerts failing together do not all retry at the same instant."""
    outbox.raise_alert("a1")
    for ceiling in (10, 20, 25, 25):
        assert outbox.dispatcher.deliver_due() == 0
        attempts, wait, error = outbox.row("a1")
        assert ceiling / 2 - 0.1 <= wait <= ceiling, f"a wait of {wait:.2f}s, its ceiling {ceiling}s"
        assert error is not None and error.startswith("FileNotFoundError")
        assert outbox.dispatcher.deliver_due() == 0  # not before its time
        outbox.due_now("a1")
    assert attempts == 4


def test_a_failing_sink_makes_the_daemon_degraded_once_and_recovered_once(tmp_path: Path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the sink's folder is a file: unwritable, also for root
    outbox = Outbox(tmp_path, blocker / "alerts.jsonl")
    try:
        outbox.raise_alert("a1")
        outbox.raise_alert("a2")
        outbox.dispatcher.deliver_due()
        outbox.due_now("a1")
        outbox.dispatcher.deliver_due()
        ((sink, problem),) = outbox.health
        assert sink == "siem" and problem is not None and "alert sink siem failing" in problem
        assert outbox.dispatcher.failing.keys() == {"siem"}
        blocker.unlink()
        blocker.mkdir()
        outbox.due_now("a1")
        outbox.due_now("a2")
        assert outbox.dispatcher.deliver_due() == 2
        assert outbox.health[1:] == [("siem", None)]
        assert outbox.dispatcher.failing == {}
        assert sorted(line["event"]["id"] for line in outbox.lines()) == ["a1", "a2"]
    finally:
        outbox.close()


def test_an_undelivered_alert_is_delivered_after_a_restart_with_the_same_id(outbox: Outbox):
    outbox.raise_alert("a1")
    (raised,) = outbox.state.due_alerts(time.time())
    outbox.dispatcher.deliver_due()  # fails: no folder
    outbox.restart()
    outbox.target.parent.mkdir()
    outbox.due_now("a1")
    assert outbox.dispatcher.deliver_due() == 1
    assert outbox.lines() == [raised.payload]  # the alert as raised (its id, its time), not rebuilt
    outbox.restart()
    assert outbox.dispatcher.deliver_due() == 0  # delivered alerts stay delivered
    assert len(outbox.lines()) == 1


def test_an_alert_for_a_sink_no_longer_configured_is_kept_not_lost(outbox: Outbox):
    outbox.target.parent.mkdir()
    outbox.state.enqueue_alert("a1", ["removed"], payload("a1"))
    assert outbox.dispatcher.deliver_due() == 0
    attempts, wait, error = outbox.row("a1")
    assert (attempts, error) == (1, "sink no longer configured") and wait > 3000
    assert outbox.state.outbox_depth() == 1


class EveryOtherBatch:
    """A notify action taking batches (the `send_batch` contract): refuses the alerts whose id ends in an
    odd digit the first time it sees them; `answer` can break the contract on purpose."""

    kind = "notify"
    id = "batched"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.seen: set[str] = set()
        self.answer: str = "outcomes"

    def describe(self) -> str:
        return "takes batches"

    def send(self, payload: dict) -> None:
        raise AssertionError("send is not called for an action with send_batch")

    def send_batch(self, payloads: list[dict]) -> list[Exception | None]:
        ids = [p["event"]["id"] for p in payloads]
        self.calls.append(ids)
        if self.answer == "raise":
            raise OSError("receiver down")
        if self.answer == "short":
            return [None]
        outcomes: list[Exception | None] = []
        for alert_id in ids:
            first = alert_id not in self.seen
            self.seen.add(alert_id)
            outcomes.append(OSError("refused") if first and int(alert_id[-1]) % 2 else None)
        return outcomes


def test_an_action_with_send_batch_gets_its_due_alerts_in_one_call_and_only_refused_ones_again(tmp_path):
    state = State(tmp_path / "state.db")
    action = EveryOtherBatch()
    health: list[tuple[str, str | None]] = []
    dispatcher = AlertDispatcher(
        state, {"batched": action}, AlertsSettings(retry_initial=60), lambda *report: health.append(report)
    )
    try:
        for n in range(4):
            state.enqueue_alert(f"a{n}", ["batched"], payload(f"a{n}"))
        assert dispatcher.deliver_due() == 2 and action.calls == [["a0", "a1", "a2", "a3"]]
        assert state.outbox_depth() == 2 and dispatcher.failed["batched"] == 2
        assert health == []  # refused items of a batch it took: retried, the sink is not failing
        state._db.execute("UPDATE outbox SET next_attempt=0 WHERE delivered IS NULL")
        assert dispatcher.deliver_due() == 2 and action.calls[1] == ["a1", "a3"]
        for answer in ("raise", "short"):  # either fails every alert of the call: all kept, retried
            action.answer = answer
            state.enqueue_alert(f"b-{answer}", ["batched"], payload(f"b-{answer}"))
            state.enqueue_alert(f"c-{answer}", ["batched"], payload(f"c-{answer}"))
            assert dispatcher.deliver_due() == 0 and state.outbox_depth() == 2
            assert health[-1][1] is not None  # nothing taken: failing
            state._db.execute("DELETE FROM outbox WHERE delivered IS NULL")
            state._queued = None  # rows removed behind the state's back: count again
    finally:
        state.close()


def test_a_summary_the_full_outbox_cannot_take_waits_for_room_and_is_then_queued_once(tmp_path):
    """Summarised alerts stay recorded until their summary is queued; queueing it and forgetting them
    is one transaction, so the summary is neither lost nor queued twice."""
    sink = JsonlSinkSettings(
        type="jsonl", name="siem", path=tmp_path / "a.jsonl", rate_limit=1, rate_interval=0.01
    )
    state = State(tmp_path / "state.db")
    dispatcher = AlertDispatcher(state, {}, AlertsSettings(sink=[sink], max_queued=1))
    state.max_queued = 1
    try:
        assert dispatcher.admit(["siem"], "a0", "inbox", {"CARD"}) == (["siem"], [])
        state.enqueue_alert("a0", ["siem"], payload("a0"))  # the outbox is now full
        for n in (1, 2):
            assert dispatcher.admit(["siem"], f"a{n}", "inbox", {"CARD", "EMAIL"}) == ([], ["siem"])
        time.sleep(0.02)
        assert dispatcher.queue_summaries() == 0 and dispatcher.queue_summaries() == 0
        state.mark_delivered("a0", "siem")
        state.max_queued = 10
        assert dispatcher.queue_summaries() == 1 and dispatcher.queue_summaries() == 0
        (item,) = state.due_alerts(time.time())
        summary = item.payload["dropwarden"]["summary"]
        assert summary["alerts"] == 2 and summary["alert_ids"] == ["a1", "a2"]
        assert [(c["type"], c["count"]) for c in summary["counts"]] == [("CARD", 2), ("EMAIL", 2)]
    finally:
        state.close()


def test_the_running_dispatcher_drains_a_backlog_pass_after_pass_without_waiting_between(outbox: Outbox):
    """A pass takes 100 rows; one that delivered something is followed by the next at once, so 1,000
    queued alerts (an outage's backlog) are all delivered in well under the ten idle waits of a second."""
    outbox.target.parent.mkdir()
    for n in range(1000):
        outbox.raise_alert(f"a{n}")
    started = time.monotonic()
    outbox.start()
    while outbox.state.outbox_depth() and time.monotonic() - started < 30:
        time.sleep(0.05)
    assert outbox.state.outbox_depth() == 0 and time.monotonic() - started < 6
    assert len(outbox.lines()) == 1000
