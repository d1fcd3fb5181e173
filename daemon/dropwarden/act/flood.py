"""Flood control per alert sink: beyond its rate, alerts are summarised per watch and type, never dropped."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dropwarden.config import SinkSettings

MAX_LISTED_IDS = 1000  # ids listed in one summary alert; every one is in the audit log (alert.summarised)


@dataclass
class _Window:
    started: float
    admitted: int = 0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    ids: list[str] = field(default_factory=list)
    summarised: int = 0


@dataclass(frozen=True)
class Summary:
    """What one sink was not sent in one interval: its own alert for that sink."""

    sink: str
    alert_id: str
    payload: dict[str, Any]


class FloodControl:
    """Per sink id, a fixed window of `rate_interval` seconds admitting `rate_limit` alerts; the rest are
    tallied for that window's summary. Thread-safe use: the caller serialises (one lock)."""

    def __init__(self, sinks: list[SinkSettings]) -> None:
        self._limits: dict[str, tuple[int, float]] = {}
        self._windows: dict[str, _Window] = {}
        self.configure(sinks)

    def configure(self, sinks: list[SinkSettings]) -> None:
        """Limits from the sinks' settings (a reload); windows of sinks still limited carry on."""
        self._limits = {s.id: (s.rate_limit, s.rate_interval) for s in sinks if s.rate_limit}

    def admit(
        self, sinks: list[str], alert_id: str, watch: str, types: set[str], now: float
    ) -> tuple[list[str], list[str]]:
        """(sinks to queue the alert for, sinks that summarise it instead)."""
        admitted: list[str] = []
        summarised: list[str] = []
        for sink in sinks:
            limit = self._limits.get(sink)
            if limit is None:
                admitted.append(sink)
                continue
            window = self._windows.setdefault(sink, _Window(now))
            if window.admitted < limit[0]:
                window.admitted += 1
                admitted.append(sink)
                continue
            window.counts.update((watch, kind) for kind in sorted(types))
            window.summarised += 1
            if len(window.ids) < MAX_LISTED_IDS:
                window.ids.append(alert_id)
            summarised.append(sink)
        return admitted, summarised

    def take_due(self, now: float, event: Any) -> list[Summary]:
        """The summaries of windows that have ended (a window of a sink no longer limited ends now);
        `event(event_fields, **fields)` builds the ECS document (`ecs_event`)."""
        due: list[Summary] = []
        for sink, window in list(self._windows.items()):
            limit = self._limits.get(sink)
            if limit is not None and now < window.started + limit[1]:
                continue
            del self._windows[sink]
            if not window.summarised:
                continue
            alert_id = f"summary-{uuid.uuid4().hex}"
            counts = [
                {"watch": watch, "type": kind, "count": count}
                for (watch, kind), count in sorted(window.counts.items())
            ]
            payload = event(
                {
                    "id": alert_id,
                    "kind": "alert",
                    "category": ["file"],
                    "type": ["info"],
                    "action": "alert.summary",
                    "reason": f"{window.summarised} alerts beyond the sink's rate, summarised",
                    "provider": "dropwarden",
                },
                dropwarden={
                    "summary": {
                        "sink": sink,
                        "from": window.started,
                        "to": now,
                        "alerts": window.summarised,
                        "counts": counts,
                        "alert_ids": window.ids,
                        "alert_ids_complete": len(window.ids) == window.summarised,
                    }
                },
            )
            due.append(Summary(sink, alert_id, payload))
        return due
