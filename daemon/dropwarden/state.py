"""The daemon's SQLite state (WAL): judged-file index, decisions not yet acted on, pending action
intents, alert outbox.

Durability: WAL with synchronous=NORMAL survives a process crash (kill -9) at any point; after a
power loss the last commits may be lost, which costs at most a re-judgement (the index) or a
re-delivered alert (the outbox is at-least-once). What must never be lost — that a file was moved —
is written to the fsynced audit log before the move happens.

A write that fails (disk full, I/O error) is remembered in `write_problem` until a later write, or
`probe()`, succeeds; `take_recovered()` then says so once, so the daemon can judge again whatever it
could not record meanwhile.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropwarden.judge.intake import FileIdentity
from dropwarden.judge.turn import without_turn

SCHEMA_VERSION = 2

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
CREATE TABLE IF NOT EXISTS decided (
    watch TEXT NOT NULL, relpath BLOB NOT NULL, body TEXT NOT NULL, verified INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, PRIMARY KEY (watch, relpath)
);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT NOT NULL, sink TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL, delivered REAL, last_error TEXT,
    PRIMARY KEY (id, sink)
);
CREATE TABLE IF NOT EXISTS operator_release (
    id INTEGER PRIMARY KEY, watch TEXT NOT NULL, relpath BLOB NOT NULL, sha256 TEXT,
    item_id TEXT NOT NULL, released REAL NOT NULL, used REAL
);
CREATE INDEX IF NOT EXISTS operator_release_pending ON operator_release (watch, relpath) WHERE used IS NULL;
CREATE INDEX IF NOT EXISTS operator_release_content ON operator_release (sha256);
DROP INDEX IF EXISTS outbox_due;
CREATE INDEX IF NOT EXISTS outbox_due_order ON outbox (next_attempt, created) WHERE delivered IS NULL;
CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox (delivered) WHERE delivered IS NOT NULL;
"""

# A delivered alert's row is kept (its payload emptied) this long, so an id enqueued again meanwhile (a
# restart's audit.head beacon) is not sent twice; then it is deleted, so state.db does not grow with
# every alert ever sent. The decision each alert was about is in the audit log.
DELIVERED_KEPT_SECONDS = 24 * 3600
_PURGE_EVERY_SECONDS = 60.0


_BUSY_MS = 30000
_SCRUB_BUSY_MS = 200


class StateError(Exception):
    """The state database cannot be used by this version (a newer schema)."""


@dataclass(frozen=True)
class Intent:
    id: str
    op: str
    body: dict[str, Any]
    created: float


@dataclass(frozen=True)
class OperatorRelease:
    """An operator restored quarantine item `item_id` to (watch, relpath): its next judgement there is
    recorded as `operator_released` instead of acted on, once, when the content (sha256) is the same."""

    id: int
    item_id: str
    sha256: str | None


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
        _private_files(path)
        self._lock = threading.RLock()
        self.max_queued: int | None = None  # `[alerts] max_queued`, set by whoever runs the outbox
        self.overflowed: Counter[str] = Counter()  # alerts not queued for a sink (outbox full), since start
        # Undelivered outbox rows: counted once (first use), then kept by this object's own writes (only the
        # daemon writes the outbox), so the `max_queued` bound costs no COUNT per alert.
        self._queued: int | None = None
        self._purged = 0.0  # when delivered rows were last deleted
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        # Freed row space is zeroed: a finished intent's raw file name must not linger in free pages.
        self._db.execute("PRAGMA secure_delete=ON")
        self._wal_holds_names = False
        self.write_problem: str | None = None
        self._recovered = False
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._drop_finished_intents()

    def _migrate(self) -> None:
        """Bring an older database to SCHEMA_VERSION (one transaction: a daemon and a CLI opening it at
        once do not both migrate). 1 -> 2: exemptions keyed by content become history only (an operator
        release now applies to one restored file, once)."""
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else None
            if version is not None and version > SCHEMA_VERSION:
                raise StateError(
                    f"state database {self.path} has schema {version}, newer than this version's"
                    f" {SCHEMA_VERSION}"
                )
            old = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='operator_released'"
            ).fetchone()
            if old:
                db.execute(
                    "INSERT INTO operator_release (watch, relpath, sha256, item_id, released, used)"
                    " SELECT '', x'', sha256, item_id, released, released FROM operator_released"
                )
                db.execute("DROP TABLE operator_released")
            if version != SCHEMA_VERSION:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )

    def _drop_finished_intents(self) -> None:
        """Databases written before finished intents were deleted keep their raw names, in rows and in
        free pages: those rows go and, once, the file is rewritten (VACUUM). Busy (another process is
        using it): tried again at the next open."""
        with self._lock:
            done = self._db.execute("SELECT value FROM meta WHERE key='finished_intents_dropped'").fetchone()
        if done:
            return
        with suppress(sqlite3.OperationalError):
            with self.transaction() as db:
                db.execute("DELETE FROM intents WHERE state != 'pending'")
            with self._lock:
                self._db.execute("VACUUM")
            self._write("INSERT OR REPLACE INTO meta (key, value) VALUES ('finished_intents_dropped', '1')")
            self._wal_holds_names = True
            self.scrub_wal()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")  # may fail too (disk full): then roll back as well
            except BaseException:
                if self._db.in_transaction:
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Remember a failed write (SQLite's messages name no data) and the first success after one."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            self.write_problem = f"state database not writable: {exc}"
            raise
        if self.write_problem is not None:
            self.write_problem = None
            self._recovered = True

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock, self._writing():
            return self._db.execute(sql, params)

    def probe(self) -> bool:
        """After a failed write: try a small one. True when the database takes writes again."""
        try:
            self._write(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('write_probe', ?)", (str(time.time()),)
            )
        except sqlite3.OperationalError:
            return False
        return True

    def take_recovered(self) -> bool:
        """True once after writes work again following a failure (whoever asks first gets it)."""
        with self._lock:
            recovered, self._recovered = self._recovered, False
        return recovered

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
        self._write(
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

    def record_judged_many(
        self,
        rows: list[tuple[FileIdentity, str | None, str, str, str]],
        then: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """`record_judged` for each (identity, sha256, verdict, ruleset, watch), in one transaction;
        `then(db)` runs in it too (the decisions acted on are no longer pending: `act.decided`)."""
        now = time.time()
        with self.transaction() as db:
            if then is not None:
                then(db)
            db.executemany(
                "INSERT OR REPLACE INTO judged VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (i.dev, i.ino, i.size, i.mtime_ns, i.ctime_ns, sha256, verdict, ruleset, watch, now)
                    for i, sha256, verdict, ruleset, watch in rows
                ],
            )

    def judged_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM judged").fetchone()[0]

    # operator releases -------------------------------------------------------------------------

    def allow_operator_release(self, watch: str, relpath: bytes, sha256: str | None, item_id: str) -> int:
        """An operator restores `item_id` to `relpath` under `watch`: its next judgement there, with the
        same content, is recorded but not acted on. Returns the release's id (for revoking)."""
        cursor = self._write(
            "INSERT INTO operator_release (watch, relpath, sha256, item_id, released) VALUES (?, ?, ?, ?, ?)",
            (watch, relpath, sha256, item_id, time.time()),
        )
        return int(cursor.lastrowid or 0)

    def revoke_operator_release(self, release_id: int) -> None:
        self._write("DELETE FROM operator_release WHERE id=?", (release_id,))

    def pending_operator_release(self, watch: str, relpath: bytes) -> OperatorRelease | None:
        """The latest unused operator release of (watch, relpath), if any (read only)."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, item_id, sha256 FROM operator_release"
                " WHERE watch=? AND relpath=? AND used IS NULL ORDER BY id DESC LIMIT 1",
                (watch, relpath),
            ).fetchone()
        return OperatorRelease(row[0], row[1], row[2]) if row else None

    def use_operator_release(self, watch: str, relpath: bytes) -> None:
        """The file at (watch, relpath) was judged: every release waiting for it is spent."""
        self._write(
            "UPDATE operator_release SET used=? WHERE watch=? AND relpath=? AND used IS NULL",
            (time.time(), watch, relpath),
        )

    def earlier_release_of(self, sha256: str) -> str | None:
        """The quarantine item an operator last released this content from, if any (for the record)."""
        with self._lock:
            row = self._db.execute(
                "SELECT item_id FROM operator_release WHERE sha256=? ORDER BY released DESC LIMIT 1",
                (sha256,),
            ).fetchone()
        return row[0] if row else None

    # intents -------------------------------------------------------------------------------------

    def add_intent(self, intent_id: str, op: str, body: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO intents (id, op, body, state, created) VALUES (?, ?, ?, 'pending', ?)",
            (intent_id, op, json.dumps(body, sort_keys=True), time.time()),
        )

    def add_intents(self, intents: list[tuple[str, str, dict[str, Any]]]) -> None:
        """`add_intent` for each (id, op, body), in one transaction: all recorded, or none."""
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO intents (id, op, body, state, created) VALUES (?, ?, ?, 'pending', ?)",
                [(intent_id, op, json.dumps(body, sort_keys=True), now) for intent_id, op, body in intents],
            )

    def finish_intents(self, intent_ids: list[str], *, path_in_audit_log: bool) -> None:
        """`finish_intent` for each id, in one transaction (and at most one checkpoint of the log)."""
        with self.transaction() as db:
            db.executemany("DELETE FROM intents WHERE id=?", [(intent_id,) for intent_id in intent_ids])
        self.names_deleted(path_in_audit_log=path_in_audit_log)

    def finish_intent(self, intent_id: str, state: str, *, path_in_audit_log: bool = False) -> None:
        """The move is over (done, aborted, failed, rolled_back, lost, orphaned): its intent, which held the
        file's raw path (names may hold sensitive values), is deleted — recovery reads only pending ones,
        the audit log keeps the outcome — and the write-ahead log that still held it is emptied.

        `path_in_audit_log`: the audit log already shows this path in clear (no span of it matched a rule),
        so the log is emptied by the next `scrub_wal` (the daemon's tick, within a second) rather than now:
        that checkpoint costs more than the rest of a release (~3 ms, two fsyncs, under the lock)."""
        self._write("DELETE FROM intents WHERE id=?", (intent_id,))
        self.names_deleted(path_in_audit_log=path_in_audit_log)

    def names_deleted(self, *, path_in_audit_log: bool) -> None:
        """Rows holding raw file names were deleted: the write-ahead log that still holds them is emptied
        now, or by the next `scrub_wal` when the audit log shows those paths in clear anyway."""
        self._wal_holds_names = True
        if not path_in_audit_log:
            self.scrub_wal()

    def scrub_wal(self) -> bool:
        """Checkpoint and truncate the write-ahead log when it may still hold a finished intent's raw name;
        True when it holds none. A reader that keeps the log busy (a CLI) is not waited for long: the
        next finished intent, or the daemon's tick, tries again. The checkpoint (two fsyncs) is done
        without the worker's turn: the other workers judge meanwhile."""
        with self._lock:
            if not self._wal_holds_names:
                return True
        with without_turn(), self._lock:
            if not self._wal_holds_names:
                return True
            try:
                self._db.execute(f"PRAGMA busy_timeout={_SCRUB_BUSY_MS}")
                busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error:
                busy = 1
            finally:
                self._db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
            self._wal_holds_names = bool(busy)
            return not busy

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows a read-only statement returns (for the stage modules that own a table: `act.decided`)."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def pending_intents(self) -> list[Intent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, op, body, created FROM intents WHERE state='pending' ORDER BY created"
            ).fetchall()
        return [Intent(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    # alert outbox --------------------------------------------------------------------------------

    def enqueue_alert(
        self,
        alert_id: str,
        sinks: list[str],
        payload: dict[str, Any],
        then: Callable[[sqlite3.Connection], None] | None = None,
    ) -> bool:
        """Queue the alert for each of `sinks`, whole or not at all: False (and counted in `overflowed`)
        when `max_queued` undelivered rows are already waiting. The caller records what was not queued.
        `then(db)` runs in the same transaction once queued (what the alert replaces, deleted at once)."""
        now = time.time()
        body = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        with self._lock:  # the count changes only once the transaction committed, under the same lock
            with self.transaction() as db:
                queued = self._undelivered(db)
                if self.max_queued is not None and queued >= self.max_queued:
                    self.overflowed.update(sinks)
                    return False
                added = db.executemany(
                    "INSERT OR IGNORE INTO outbox (id, sink, payload, created, next_attempt)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(alert_id, sink, body, now, now) for sink in sinks],
                ).rowcount
                if then is not None:
                    then(db)
            self._queued = queued + max(added, 0)
        return True

    def _undelivered(self, db: sqlite3.Connection) -> int:
        """Undelivered rows: counted on first use, then the kept count (the caller holds the lock)."""
        if self._queued is None:
            self._queued = db.execute("SELECT count(*) FROM outbox WHERE delivered IS NULL").fetchone()[0]
        return self._queued

    def due_alerts(self, now: float, limit: int = 100) -> list[OutboxItem]:
        """Undelivered rows due by `now`, in the order they fell due (a new alert: oldest first), read
        in index order: a backlog of any size costs `limit` rows per call, not a sort of all of them."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, sink, payload, attempts FROM outbox"
                " WHERE delivered IS NULL AND next_attempt <= ? ORDER BY next_attempt, created LIMIT ?",
                (now, limit),
            ).fetchall()
        return [OutboxItem(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def mark_delivered(self, alert_id: str, sink: str) -> None:
        self.mark_delivered_many([(alert_id, sink)])

    def mark_delivered_many(self, rows: list[tuple[str, str]]) -> None:
        """(alert id, sink) rows delivered, in one transaction (one commit for a whole pass): the payload
        is emptied, and rows delivered more than DELIVERED_KEPT_SECONDS ago are deleted (once a minute)."""
        now = time.time()
        with self._lock:
            with self.transaction() as db:
                done = db.executemany(
                    "UPDATE outbox SET delivered=?, payload='', last_error=NULL"
                    " WHERE id=? AND sink=? AND delivered IS NULL",
                    [(now, alert_id, sink) for alert_id, sink in rows],
                ).rowcount
                if now - self._purged >= _PURGE_EVERY_SECONDS:
                    self.forget_delivered(now - DELIVERED_KEPT_SECONDS, db)
                    self._purged = now
            if self._queued is not None:
                self._queued = max(self._queued - max(done, 0), 0)

    def forget_delivered(self, before: float, db: sqlite3.Connection | None = None) -> int:
        """Delete the rows of alerts delivered before `before`; how many went."""
        if db is None:
            with self.transaction() as tx:
                return self.forget_delivered(before, tx)
        return db.execute(
            "DELETE FROM outbox WHERE delivered IS NOT NULL AND delivered < ?", (before,)
        ).rowcount

    def mark_failed(self, alert_id: str, sink: str, error: str, retry_at: float) -> None:
        self._write(
            "UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt=? WHERE id=? AND sink=?",
            (error[:500], retry_at, alert_id, sink),
        )

    def outbox_depth(self) -> int:
        with self._lock:
            return self._undelivered(self._db)

    def outbox_by_sink(self) -> dict[str, tuple[int, float]]:
        """Per sink id: (undelivered rows, creation time of its oldest undelivered row)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sink, count(*), min(created) FROM outbox WHERE delivered IS NULL GROUP BY sink"
            ).fetchall()
        return {sink: (count, oldest) for sink, count, oldest in rows}


def _private_files(path: Path) -> None:
    """state.db 0600 whatever the umask (SQLite gives its -wal and -shm the database file's mode), created
    here before SQLite opens it; an existing database and its -wal/-shm are tightened. The state
    directory is the operator's: a state.db that is a link is followed, as SQLite does (its -wal and
    -shm lie beside the target). A file owned by another user (a CLI run as someone else) is left to
    its owner, who tightens it at its next open."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    _tighten(fd)
    target = os.path.realpath(path)
    for suffix in ("-wal", "-shm"):
        try:
            fd = os.open(target + suffix, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        _tighten(fd)


def _tighten(fd: int) -> None:
    """Mode 0600 (closing `fd`)."""
    try:
        if os.fstat(fd).st_mode & 0o077:
            with suppress(PermissionError):
                os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
