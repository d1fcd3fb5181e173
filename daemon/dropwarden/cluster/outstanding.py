"""The jobs a watcher sent and has no verdict for yet, in SQLite beside its state: a watcher killed
while waiting finds them at restart and asks for them again."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job TEXT PRIMARY KEY, watch TEXT NOT NULL, relpath BLOB NOT NULL, sha256 TEXT NOT NULL,
    store TEXT NOT NULL, sent REAL NOT NULL
);
DROP INDEX IF EXISTS jobs_file;  -- looked up in memory now (`Outstanding.find`)
"""


@dataclass(frozen=True)
class Job:
    job: str
    watch: str
    relpath: bytes
    sha256: str
    store: str
    sent: float


class Outstanding:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        path.chmod(0o600)
        # the rows a previous run left, by file: the only jobs `find` can return (this run's own jobs are
        # never asked for again while in flight: a worker has the file in hand)
        self._inherited = {(job.watch, job.relpath, job.sha256): job for job in self.all()}

    def add(self, job: str, watch: str, relpath: bytes, sha256: str, store: str) -> None:
        self.add_many([(job, watch, relpath, sha256, store)])

    def add_many(self, rows: list[tuple[str, str, bytes, str, str]]) -> None:
        """Rows of (job, watch, relpath, sha256, store), in one transaction."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?)", [(*row, now) for row in rows]
                )
            finally:
                self._db.execute("COMMIT")

    def find(self, watch: str, relpath: bytes, sha256: str) -> Job | None:
        """The job a previous run (since killed) sent for this file's content, if any; once only."""
        with self._lock:
            return self._inherited.pop((watch, relpath, sha256), None)

    def remove(self, job: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE job = ?", (job,))

    def remove_many(self, jobs: list[str]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("DELETE FROM jobs WHERE job = ?", [(job,) for job in jobs])
            finally:
                self._db.execute("COMMIT")

    def all(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute("SELECT job, watch, relpath, sha256, store, sent FROM jobs").fetchall()
        return [Job(*row) for row in rows]

    def forget_older_than(self, before: float) -> list[Job]:
        """Drop the rows of jobs no worker took up again (their files left before a restart)."""
        with self._lock:
            rows = self._db.execute(
                "DELETE FROM jobs WHERE sent < ? RETURNING job, watch, relpath, sha256, store, sent",
                (before,),
            ).fetchall()
            gone = [Job(*row) for row in rows]
            for job in gone:
                self._inherited.pop((job.watch, job.relpath, job.sha256), None)
        return gone

    def close(self) -> None:
        with self._lock:
            self._db.close()
