"""Alerts: ECS-shaped payloads, a durable outbox, and delivery to sinks with retry and backoff.

An alert never carries a sensitive value: finding type, rule, severity, location and the keyed
fingerprint only (no excerpt). Delivery is at least once; the alert id is stable across retries so
a SIEM can de-duplicate. Every alert carries the audit log's durable chain head
(`dropwarden.audit_head`: log_id, seq, hash), and `HeadBeacon` sends it on its own now and then
(`audit.head` events): copies off the host that prove what the log held.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from dropwarden import __version__
from dropwarden.act.flood import FloodControl
from dropwarden.act.floodstore import FloodStore
from dropwarden.config import AlertsSettings, SinkSettings
from dropwarden.findings import Finding, Severity
from dropwarden.registry import Registry
from dropwarden.state import OutboxItem, State

_ECS_SEVERITY = {
    Severity.INFO: 1,
    Severity.LOW: 21,
    Severity.MEDIUM: 47,
    Severity.HIGH: 73,
    Severity.CRITICAL: 99,
}


class Sink(Protocol):
    """A notify action as the dispatcher uses it; it may also define `send_batch` (see `Action`)."""

    id: str

    def send(self, payload: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def notify_actions(
    registry: Registry, audit: Callable[[str, dict[str, Any]], None] | None = None
) -> dict[str, Sink]:
    """Every registered notify action by id: what the dispatcher delivers outbox rows to. Each that
    defines `use_audit(append)` is given `audit` (appends an `action.*` event to the audit log)."""
    actions: dict[str, Sink] = {}
    for action in registry.actions.values():
        if action.kind != "notify":
            continue
        use_audit = getattr(action, "use_audit", None)
        if audit is not None and use_audit is not None:
            use_audit(audit)
        actions[action.id] = action  # type: ignore[assignment]
    return actions


def configured_sinks(settings: AlertsSettings, registry: Registry) -> list[str]:
    """What a watch's `"alert"` means: the ids of the configured `[[alerts.sink]]` entries (registered as
    notify actions by the plugin providing their type); also where `audit.head` events go."""
    return [sink.id for sink in settings.sink if sink.id in registry.actions]


def filter_sinks(
    targets: list[str],
    filters: Mapping[str, SinkSettings],
    watch: str,
    findings: tuple[Finding, ...],
) -> tuple[list[str], list[str]]:
    """(kept, filtered out): the notify targets whose sink filters accept an alert about `watch` with
    `findings` (its severity the highest of theirs, medium without findings, as `alert_payload` says;
    its types theirs, or "unscanned" without findings). A target that is no configured sink (a plugin's
    notify action) has no filters."""
    severity = max((f.severity for f in findings), default=Severity.MEDIUM)
    types = {f.type for f in findings} or {"unscanned"}
    kept: list[str] = []
    dropped: list[str] = []
    for target in targets:
        sink = filters.get(target)
        (kept if sink is None or sink.accepts(watch, severity, types) else dropped).append(target)
    return kept, dropped


def alert_payload(
    *,
    alert_id: str,
    watch: str,
    path: str,
    sha256: str | None,
    size: int | None,
    outcome: str,
    reason: str | None,
    findings: tuple[Finding, ...],
    actions: tuple[str, ...],
    audit_seq: int | None,
    audit_head: dict[str, Any] | None = None,
    counts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`audit_head`: the durable audit chain head (log_id, seq, hash) when the alert was raised;
    `counts`: per type, how many findings were made and how many of them `findings` holds."""
    top = max((f.severity for f in findings), default=Severity.MEDIUM)
    return ecs_event(
        {
            "id": alert_id,
            "kind": "alert",
            "category": ["file", "intrusion_detection"],
            "type": ["info"],
            "action": outcome,
            "severity": _ECS_SEVERITY[top],
            "reason": reason or ", ".join(sorted({f.type for f in findings})),
            "provider": "dropwarden",
        },
        file={
            "path": path,
            "name": os.path.basename(path),
            "size": size,
            "hash": {"sha256": sha256} if sha256 else {},
        },
        dropwarden={
            "watch": watch,
            "verdict": outcome,
            "actions": list(actions),
            "audit_seq": audit_seq,
            "audit_head": audit_head,
            "findings": [
                {
                    "type": f.type,
                    "rule": f.rule,
                    "detector": f.detector,
                    "detector_version": f.detector_version,
                    "severity": str(f.severity),
                    "confidence": round(f.confidence, 3),
                    "location": f.location.to_dict(),
                    "fingerprint": f.fingerprint,
                }
                for f in findings
            ],
            **({"counts": counts} if counts else {}),
        },
    )


def ecs_event(event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An ECS-shaped document around `event` (its `event` object) and `fields` (`file`, `dropwarden`,
    ...): the timestamp, ECS version, host and observer every alert and event carries."""
    return {
        "@timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "ecs": {"version": "8.11.0"},
        "event": event,
        **fields,
        "host": {"hostname": socket.gethostname()},
        "observer": {"product": "dropwarden", "version": __version__},
    }


def ecs_severity(severity: Severity) -> int:
    """ECS `event.severity` (1..99) of a dropwarden severity."""
    return _ECS_SEVERITY[severity]


def audit_head_payload(head: dict[str, Any]) -> dict[str, Any]:
    """An `audit.head` event: the durable audit chain head (log_id, seq, hash) and the last checkpoint."""
    point = head.get("checkpoint") or {}
    return ecs_event(
        {
            "id": head_event_id(head),
            "kind": "event",
            "category": ["file"],
            "type": ["info"],
            "action": "audit.head",
            "provider": "dropwarden",
        },
        dropwarden={
            "audit_head": {k: head[k] for k in ("log_id", "seq", "hash")},
            "audit_checkpoint": {k: point[k] for k in ("seq", "epoch") if k in point},
        },
    )


def head_event_id(head: dict[str, Any]) -> str:
    """Stable per head, so a redelivered or re-enqueued event de-duplicates."""
    return f"audit-head-{head['log_id']}-{head['seq']}"


class HeadBeacon:
    """Puts an `audit.head` event in the outbox for every sink every `interval` seconds, when the
    anchored (durable) head has moved since the last one. interval 0: never."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = time.monotonic() + interval
        self._sent: tuple[str, int] | None = None

    def tick(self, head: dict[str, Any] | None, state: State, sinks: list[str]) -> bool:
        """Enqueue the event when due; True when one was enqueued (then kick the dispatcher)."""
        now = time.monotonic()
        if not self.interval or now < self._next or head is None or not sinks:
            return False
        self._next = now + self.interval
        key = (head["log_id"], head["seq"])
        if key == self._sent:
            return False
        state.enqueue_alert(head_event_id(head), sinks, audit_head_payload(head))
        self._sent = key
        return True


def retry_delay(settings: AlertsSettings, attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: exponential from `retry_initial`, capped
    at `retry_max`, with "equal jitter" (between half and all of it) so that alerts queued together, or
    daemons restarted together, do not all retry at the same instant."""
    ceiling = min(settings.retry_max, settings.retry_initial * 2 ** min(attempts, 20))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class AlertDispatcher:
    """Delivers due outbox rows to their sinks; a failing sink is retried with exponential backoff."""

    def __init__(
        self,
        state: State,
        sinks: dict[str, Sink],
        settings: AlertsSettings,
        on_health: Callable[[str, str | None], None] = lambda sink, problem: None,
    ) -> None:
        self.state = state
        self.sinks = sinks
        self.settings = settings
        self._on_health = on_health
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="alerts", daemon=True)
        self.failing: dict[str, str] = {}
        self.delivered: Counter[str] = Counter()  # per sink id, since start: what /metrics reports
        self.failed: Counter[str] = Counter()  # failed delivery attempts per sink id, since start
        self.flood = FloodControl(settings.sink, FloodStore(state))
        self._flood_lock = threading.Lock()

    def reconfigure(self, sinks: dict[str, Sink], settings: AlertsSettings) -> None:
        """Deliver through `sinks` with `settings`' retry timing from the next pass on (a reload); rows
        still due for a sink no longer configured are marked failed as they come up."""
        self.sinks = sinks
        self.settings = settings
        with self._flood_lock:
            self.flood.configure(settings.sink)

    def admit(
        self, sinks: list[str], alert_id: str, watch: str, types: set[str]
    ) -> tuple[list[str], list[str]]:
        """Flood control: (sinks to queue the alert for, sinks over their rate that summarise it). The
        caller records each summarised alert (audit `alert.summarised`); its window's summary alert is
        queued for that sink by the dispatcher once the window ends."""
        with self._flood_lock:
            return self.flood.admit(sinks, alert_id, watch, types, time.time())

    def queue_summaries(self) -> int:
        """Queue the summary alert of every flood-control window that has ended (or died with an earlier
        run of the daemon: its summarised alerts are in the state database); returns how many. One the
        outbox cannot take (full) is tried again at the next pass."""
        with self._flood_lock:
            due = self.flood.take_due(time.time(), ecs_event)
        queued = 0
        for summary in due:  # queued and its rows deleted in one transaction: a crash loses neither
            forget = partial(self.flood.store.forget, sink=summary.sink, tally=summary.tally)
            queued += self.state.enqueue_alert(summary.alert_id, [summary.sink], summary.payload, forget)
        return queued

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def kick(self) -> None:
        self._wake.set()

    def deliver_due(self) -> int:
        """One pass over due rows; returns how many were delivered. Their delivery marks are committed
        together at the end of the pass (one SQLite commit, not one per alert): a crash before that
        delivers them again, with the same ids (at least once)."""
        delivered: list[tuple[str, str]] = []
        self.queue_summaries()
        try:
            self._deliver_pass(delivered)
        finally:
            if delivered:
                self.state.mark_delivered_many(delivered)
        return len(delivered)

    def _deliver_pass(self, delivered: list[tuple[str, str]]) -> None:
        """Each due row to its sink: a sink with `send_batch` gets all of its due rows in one call (it
        splits them into requests itself), any other one row at a time through `send`."""
        by_sink: dict[str, list[OutboxItem]] = {}
        for item in self.state.due_alerts(time.time()):
            by_sink.setdefault(item.sink, []).append(item)
        for sink_id, items in by_sink.items():
            sink = self.sinks.get(sink_id)
            if sink is None:
                for item in items:
                    self.state.mark_failed(item.id, sink_id, "sink no longer configured", time.time() + 3600)
                continue
            send_batch = getattr(sink, "send_batch", None)
            if callable(send_batch):
                outcomes = _batch_outcomes(send_batch, [item.payload for item in items])
            else:
                outcomes = [_outcome(sink.send, item.payload) for item in items]
            reached = any(outcome is None for outcome in outcomes)
            for item, outcome in zip(items, outcomes, strict=True):
                if outcome is None:
                    delivered.append((item.id, item.sink))
                    self.delivered[item.sink] += 1
                else:
                    self._failed(item, outcome, health=not reached)
            if reached and sink_id in self.failing:
                del self.failing[sink_id]
                self._on_health(sink_id, None)

    def _failed(self, item: OutboxItem, exc: BaseException, health: bool) -> None:
        """Retry later; `health`: the sink took nothing this pass, so it is failing (not one refused item
        of a batch it otherwise took)."""
        self.failed[item.sink] += 1
        delay = retry_delay(self.settings, item.attempts)
        self.state.mark_failed(item.id, item.sink, f"{type(exc).__name__}: {exc}", time.time() + delay)
        if health and item.sink not in self.failing:
            self.failing[item.sink] = str(exc)
            self._on_health(item.sink, f"alert sink {item.sink} failing: {exc}")

    def _loop(self) -> None:
        """A pass that delivered something is followed by the next at once (a backlog drains at full
        speed, 100 rows a pass); otherwise the next waits for a kick or a second."""
        while not self._stop.is_set():
            try:
                busy = self.deliver_due() > 0
            except Exception:  # the state database is busy or broken; try again shortly
                busy = False
            if not busy:
                self._wake.wait(1.0)
                self._wake.clear()


def _outcome(send: Callable[[dict[str, Any]], None], payload: dict[str, Any]) -> Exception | None:
    try:
        send(payload)
    except Exception as exc:
        return exc
    return None


def _batch_outcomes(send_batch: Callable[..., Any], payloads: list[dict[str, Any]]) -> list[Exception | None]:
    """`send_batch`'s per-payload outcomes; when it raises, or answers anything but one outcome (None or
    an exception) per payload, every payload failed (and is retried)."""
    try:
        outcomes = send_batch(payloads)
    except Exception as exc:
        return [exc] * len(payloads)
    if not isinstance(outcomes, list | tuple) or len(outcomes) != len(payloads):
        return [TypeError("send_batch answered no outcome per alert")] * len(payloads)
    return [
        o if o is None or isinstance(o, Exception) else TypeError("send_batch outcome is no exception")
        for o in outcomes
    ]
