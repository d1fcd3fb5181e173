"""The daemon's SQLite state (WAL): judged-file index, pending action intents, alert outbox.

Durability: WAL with synchronous=NORMAL survives a process crash (kill -9) at any point; after a
power loss the last commits may be lost, which costs at most a re-judgement (the index) or a
re-delivered alert (the outbox is at-least-once). What must never be lost — that a file was moved —
is written to the fsynced audit log before the move happens.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropwarden.intake import FileIdentity

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS judged (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, sha256 TEXT, verdict TEXT NOT NULL, ruleset TEXT NOT NULL,
    watch TEXT NOT NULL, judged_at REAL NOT NULL,
    PRIMARY KEY (dev, ino, size, mtime_ns, ctime_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS intents (
    id TEXT PRIMARY KEY, op TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL,
    created REAL NOT NULL, finished REAL
);
CREATE INDEX IF NOT EXISTS intents_pending ON intents (state) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT NOT NULL, sink TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL, delivered REAL, last_error TEXT,
    PRIMARY KEY (id, sink)
);
CREATE TABLE IF NOT EXISTS operator_released (
    sha256 TEXT PRIMARY KEY, item_id TEXT NOT NULL, released REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt) WHERE delivered IS NULL;
"""


@dataclass(frozen=True)
class Intent:
    id: str
    op: str
    body: dict[str, Any]
    created: float


@dataclass(frozen=True)
class OutboxItem:
    id: str
    sink: str
    payload: dict[str, Any]
    attempts: int


class State:
    """One connection shared by the daemon's threads behind a lock; statements are short."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # judged-file index -------------------------------------------------------------------------

    def judged_verdict(self, identity: FileIdentity, ruleset: str) -> str | None:
        """The verdict recorded for exactly this file version under this ruleset, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT verdict FROM judged"
                " WHERE dev=? AND ino=? AND size=? AND mtime_ns=? AND ctime_ns=? AND ruleset=?",
                (identity.dev, identity.ino, identity.size, identity.mtime_ns, identity.ctime_ns, ruleset),
            ).fetchone()
        return row[0] if row else None

    def record_judged(
        self, identity: FileIdentity, sha256: str | None, verdict: str, ruleset: str, watch: str
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO judged VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    identity.dev,
                    identity.ino,
                    identity.size,
                    identity.mtime_ns,
                    identity.ctime_ns,
                    sha256,
                    verdict,
                    ruleset,
                    watch,
                    time.time(),
                ),
            )

    def judged_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM judged").fetchone()[0]

    # operator releases -------------------------------------------------------------------------

    def allow_operator_release(self, sha256: str, item_id: str) -> None:
        """Content an operator restored from quarantine: judged and recorded, but not acted on again."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO operator_released VALUES (?, ?, ?)", (sha256, item_id, time.time())
            )

    def revoke_operator_release(self, sha256: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM operator_released WHERE sha256=?", (sha256,))

    def operator_released(self, sha256: str) -> str | None:
        """The quarantine id the operator restored this content from, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT item_id FROM operator_released WHERE sha256=?", (sha256,)
            ).fetchone()
        return row[0] if row else None

    # intents -------------------------------------------------------------------------------------

    def add_intent(self, intent_id: str, op: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO intents (id, op, body, state, created) VALUES (?, ?, ?, 'pending', ?)",
                (intent_id, op, json.dumps(body, sort_keys=True), time.time()),
            )

    def finish_intent(self, intent_id: str, state: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE intents SET state=?, finished=? WHERE id=?", (state, time.time(), intent_id)
            )

    def pending_intents(self) -> list[Intent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, op, body, created FROM intents WHERE state='pending' ORDER BY created"
            ).fetchall()
        return [Intent(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    # alert outbox --------------------------------------------------------------------------------

    def enqueue_alert(self, alert_id: str, sinks: list[str], payload: dict[str, Any]) -> None:
        now = time.time()
        body = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO outbox (id, sink, payload, created, next_attempt)"
                " VALUES (?, ?, ?, ?, ?)",
                [(alert_id, sink, body, now, now) for sink in sinks],
            )

    def due_alerts(self, now: float, limit: int = 100) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, sink, payload, attempts FROM outbox"
                " WHERE delivered IS NULL AND next_attempt <= ? ORDER BY created LIMIT ?",
                (now, limit),
            ).fetchall()
        return [OutboxItem(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def mark_delivered(self, alert_id: str, sink: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET delivered=?, last_error=NULL WHERE id=? AND sink=?",
                (time.time(), alert_id, sink),
            )

    def mark_failed(self, alert_id: str, sink: str, error: str, retry_at: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt=? WHERE id=? AND sink=?",
                (error[:500], retry_at, alert_id, sink),
            )

    def outbox_depth(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox WHERE delivered IS NULL").fetchone()[0]
