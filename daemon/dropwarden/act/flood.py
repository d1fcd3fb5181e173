"""Flood control per alert sink: beyond its rate, alerts are summarised per watch and type, never dropped."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from dropwarden.act.floodstore import FloodStore, Tally
from dropwarden.config import SinkSettings

MAX_LISTED_IDS = 1000  # ids listed in one summary alert; every one is in the audit log (alert.summarised)


@dataclass
class _Window:
    started: float
    admitted: int = 0


@dataclass(frozen=True)
class Summary:
    """What one sink was not sent in one interval: its own alert for that sink; `tally` the stored rows
    it counts (deleted when the summary is queued)."""

    sink: str
    alert_id: str
    payload: dict[str, Any]
    tally: Tally


class FloodControl:
    """Per sink id, a fixed window of `rate_interval` seconds admitting `rate_limit` alerts; the rest are
    recorded in `store` (the state database) for that window's summary, so a crash loses none: after a
    restart the rows of a window that died with the daemon are summarised at the first pass. Thread-safe
    use: the caller serialises (one lock)."""

    def __init__(self, sinks: list[SinkSettings], store: FloodStore) -> None:
        self._limits: dict[str, tuple[int, float]] = {}
        self._windows: dict[str, _Window] = {}
        self.store = store
        self.configure(sinks)

    def configure(self, sinks: list[SinkSettings]) -> None:
        """Limits from the sinks' settings (a reload); windows of sinks still limited carry on."""
        self._limits = {s.id: (s.rate_limit, s.rate_interval) for s in sinks if s.rate_limit}

    def admit(
        self, sinks: list[str], alert_id: str, watch: str, types: set[str], now: float
    ) -> tuple[list[str], list[str]]:
        """(sinks to queue the alert for, sinks that summarise it instead: it is recorded for them). An
        alert that cannot be recorded (the state database fails) is queued rather than summarised."""
        admitted: list[str] = []
        summarised: list[str] = []
        for sink in sinks:
            limit = self._limits.get(sink)
            if limit is None:
                admitted.append(sink)
                continue
            window = self._windows.setdefault(sink, _Window(now))  # ended ones are closed by take_due
            if window.admitted < limit[0]:
                window.admitted += 1
                admitted.append(sink)
                continue
            try:
                self.store.record(sink, alert_id, watch, types, window.started)
            except sqlite3.Error:
                admitted.append(sink)
                continue
            summarised.append(sink)
        return admitted, summarised

    def take_due(self, now: float, event: Any) -> list[Summary]:
        """The summaries owed whose window has ended (or died with a previous run; a sink no longer
        limited is owed its summary now); `event(event_fields, **fields)` builds the ECS document
        (`ecs_event`). The caller queues each and then deletes its rows (`store.forget`), at once."""
        for sink, window in list(self._windows.items()):
            limit = self._limits.get(sink)
            if limit is None or now >= window.started + limit[1]:
                del self._windows[sink]
        due: list[Summary] = []
        for sink in sorted(self.store.pending - set(self._windows)):
            tally = self.store.tally(sink, MAX_LISTED_IDS)
            if tally is not None:
                due.append(_summary(sink, tally, now, event))
        return due


def _summary(sink: str, tally: Tally, now: float, event: Any) -> Summary:
    alert_id = f"summary-{uuid.uuid4().hex}"
    payload = event(
        {
            "id": alert_id,
            "kind": "alert",
            "category": ["file"],
            "type": ["info"],
            "action": "alert.summary",
            "reason": f"{tally.alerts} alerts beyond the sink's rate, summarised",
            "provider": "dropwarden",
        },
        dropwarden={
            "summary": {
                "sink": sink,
                "from": tally.started,
                "to": now,
                "alerts": tally.alerts,
                "counts": [{"watch": w, "type": t, "count": c} for w, t, c in tally.counts],
                "alert_ids": tally.ids,
                "alert_ids_complete": len(tally.ids) == tally.alerts,
            }
        },
    )
    return Summary(sink, alert_id, payload, tally)
