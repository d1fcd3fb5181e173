"""Flood control's durable tally: a summarised alert stays in the state database until its summary."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from dropwarden.state import State

_SCHEMA = """
CREATE TABLE IF NOT EXISTS flood_summarised (
    sink TEXT NOT NULL, alert_id TEXT NOT NULL, watch TEXT NOT NULL, type TEXT NOT NULL,
    window REAL NOT NULL, PRIMARY KEY (sink, alert_id, type)
);
"""


@dataclass(frozen=True)
class Tally:
    """What one sink was not sent since its last summary: the rows up to `last_row`."""

    alerts: int
    counts: list[tuple[str, str, int]]  # (watch, type, alerts)
    ids: list[str]  # the first `listed` ids, in the order they were summarised
    started: float  # the start of the earliest window they fell in
    last_row: int


class FloodStore:
    """Rows (sink, alert id, watch, type, window start) written when an alert is summarised, in the state
    database (WAL: a kill -9 loses none), deleted in the transaction that queues their summary alert."""

    def __init__(self, state: State) -> None:
        self.state = state
        with state.transaction() as db:
            db.execute(_SCHEMA)
            rows = db.execute("SELECT DISTINCT sink FROM flood_summarised").fetchall()
        self.pending: set[str] = {row[0] for row in rows}  # sinks with rows: a summary is owed to them

    def record(self, sink: str, alert_id: str, watch: str, types: set[str], window: float) -> None:
        """The alert is summarised for `sink` (one row per type); raises sqlite3.Error when not recorded."""
        with self.state.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO flood_summarised (sink, alert_id, watch, type, window)"
                " VALUES (?, ?, ?, ?, ?)",
                [(sink, alert_id, watch, kind, window) for kind in sorted(types)],
            )
        self.pending.add(sink)

    def tally(self, sink: str, listed: int) -> Tally | None:
        """The sink's summarised alerts so far (None when there are none)."""
        with self.state.transaction() as db:
            last_row, alerts, started = db.execute(
                "SELECT max(rowid), count(DISTINCT alert_id), min(window) FROM flood_summarised WHERE sink=?",
                (sink,),
            ).fetchone()
            if not alerts:
                self.pending.discard(sink)
                return None
            counts = db.execute(
                "SELECT watch, type, count(*) FROM flood_summarised WHERE sink=? GROUP BY watch, type"
                " ORDER BY watch, type",
                (sink,),
            ).fetchall()
            ids = db.execute(
                "SELECT alert_id FROM flood_summarised WHERE sink=? GROUP BY alert_id ORDER BY min(rowid)"
                " LIMIT ?",
                (sink, listed),
            ).fetchall()
        return Tally(alerts, [tuple(c) for c in counts], [i[0] for i in ids], started, last_row)

    def forget(self, db: sqlite3.Connection, sink: str, tally: Tally) -> None:
        """Delete the rows `tally` counted, inside the transaction that queues their summary."""
        db.execute("DELETE FROM flood_summarised WHERE sink=? AND rowid<=?", (sink, tally.last_row))
