"""Settle: decide when a file that something happened to is complete, then hand it to the work queue.

A file is ready after close-write or a move into the folder followed by a short quiet period with a
stable stat. A plain create waits for its close-write (with a long stat-stable fallback for writers
that never close); synthetic creates (files inside a directory that appeared before its watch),
polling observers and reconcile finds are settled by stat alone, and so are files found in a directory
that just appeared (watchdog reports those as plain creates, whose close-write may have come and gone
before the directory was watched). The quiet period can be set per watch, for writers that close the
file between chunks.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import os
import queue
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from dropwarden.config import Settings


class Hint(StrEnum):
    """What was observed about a path."""

    CLOSED = "closed"  # close-write
    MOVED_IN = "moved_in"  # rename into (or within) the folder
    CREATED = "created"  # open(O_CREAT): wait for close-write
    MODIFIED = "modified"  # written again: wait for close-write
    STAT = "stat"  # synthetic create, polling observer, reconcile: settle by a stable stat
    FOUND = "found"  # listed in a directory that just appeared: settle by stat, even over a create
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A settled file, relative to its watch root, ready to be judged."""

    watch: str
    relpath: str
    origin: str
    settled_at: float = 0.0


@dataclass(slots=True)
class _Pending:
    hint: Hint
    deadline: float
    origin: str
    seen: tuple[int, int, int, int] | None = None
    first_seen: float = field(default_factory=time.monotonic)


class Settler:
    """One thread; the watch handlers only append to its inbox, which never blocks them."""

    def __init__(
        self,
        resolve: Callable[[str, str], str | None],
        work: queue.Queue[WorkItem],
        *,
        quiet: float,
        stat_period: float,
        open_writer_timeout: float,
        inbox_limit: int = 200_000,
        on_loss: Callable[[str], None] = lambda reason: None,
        quiet_for: Callable[[str], float] | None = None,
    ) -> None:
        self._resolve = resolve  # (watch, relpath) -> absolute path for lstat, or None if unknown watch
        self._work = work
        self.quiet = quiet
        self._quiet_for = quiet_for  # watch id -> its quiet period (a per-watch settle_quiet)
        self.stat_period = stat_period
        self.open_writer_timeout = open_writer_timeout
        self._inbox: deque[tuple[str, str, Hint, str]] = deque()
        self._inbox_limit = inbox_limit
        self._on_loss = on_loss
        self._wake = threading.Event()
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._heap: list[tuple[float, int, tuple[str, str]]] = []
        self._counter = itertools.count()
        self._ready: deque[WorkItem] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="settler", daemon=True)

    # called from observer threads ------------------------------------------------------------

    def notify(self, watch: str, relpath: str, hint: Hint, origin: str = "event") -> None:
        if len(self._inbox) >= self._inbox_limit:
            self._on_loss("settle inbox full")  # reconcile will find what we drop here
            return
        self._inbox.append((watch, relpath, hint, origin))
        self._wake.set()

    # lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._inbox) + len(self._ready)

    # the loop ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._drain_inbox()
            self._flush_ready()
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                deadline, _, key = heapq.heappop(self._heap)
                entry = self._pending.get(key)
                if entry is None or entry.deadline != deadline:
                    continue  # superseded
                self._check(key, entry, now)
            self._flush_ready()
            timeout = (self._heap[0][0] - time.monotonic()) if self._heap else 0.5
            if self._ready:
                timeout = min(timeout, 0.05)
            self._wake.wait(max(0.0, min(timeout, 0.5)))
            self._wake.clear()

    def _drain_inbox(self) -> None:
        while self._inbox:
            watch, relpath, hint, origin = self._inbox.popleft()
            self._observe((watch, relpath), hint, origin)

    def _observe(self, key: tuple[str, str], hint: Hint, origin: str) -> None:
        now = time.monotonic()
        entry = self._pending.get(key)
        if hint is Hint.DELETED:
            self._pending.pop(key, None)
            return
        if hint in (Hint.CLOSED, Hint.MOVED_IN):
            self._arm(key, hint, origin, now)
        elif hint is Hint.CREATED or hint is Hint.MODIFIED:
            st = None
            if hint is Hint.CREATED:
                st = self._lstat(key)
                if st is not None and (not stat.S_ISREG(st.st_mode) or st.st_nlink != 1):
                    # Links, FIFOs, hard links: complete the moment they exist; intake refuses them.
                    self._ready.append(WorkItem(key[0], key[1], origin, time.monotonic()))
                    return
            # A file already settling by stat (polling, synthetic create) keeps settling by stat.
            by_stat = entry is not None and entry.hint is Hint.STAT
            self._arm(key, Hint.STAT if by_stat else hint, origin, now, st)
        elif hint is Hint.STAT:
            if entry is not None:
                # Already settling: events know more than a sweep (a writer may still hold the file).
                return
            self._arm(key, Hint.STAT, origin, now)
        elif hint is Hint.FOUND and (entry is None or entry.hint in (Hint.CREATED, Hint.MODIFIED)):
            # watchdog simulates a plain create for each file already in a new directory, and the
            # close-write may have come before the directory was watched: waiting for it would hold
            # the file for open_writer_timeout. A close-write or move-in seen since still wins.
            self._arm(key, Hint.STAT, origin, now)

    def _period(self, hint: Hint, watch: str) -> float:
        """How long a file must stay unchanged, by what we know of it."""
        if hint in (Hint.CLOSED, Hint.MOVED_IN):
            return self._quiet_for(watch) if self._quiet_for is not None else self.quiet
        return self.stat_period if hint is Hint.STAT else self.open_writer_timeout

    def _arm(
        self, key: tuple[str, str], hint: Hint, origin: str, now: float, st: os.stat_result | None = None
    ) -> None:
        """Wait a period of `hint`'s kind for the file; `st`: its lstat, if just taken."""
        seen = self._stat(key) if st is None else _identity(st)
        entry = _Pending(hint, now + self._period(hint, key[0]), origin, seen)
        self._pending[key] = entry
        heapq.heappush(self._heap, (entry.deadline, next(self._counter), key))

    def _check(self, key: tuple[str, str], entry: _Pending, now: float) -> None:
        current = self._stat(key)
        if current is None:
            self._pending.pop(key, None)  # gone (moved away or deleted): nothing to judge
            return
        if current == entry.seen:
            self._pending.pop(key, None)
            self._ready.append(WorkItem(key[0], key[1], entry.origin, time.monotonic()))
            return
        # Still changing: wait another period of the same kind.
        entry.seen = current
        entry.deadline = now + self._period(entry.hint, key[0])
        heapq.heappush(self._heap, (entry.deadline, next(self._counter), key))

    def _flush_ready(self) -> None:
        while self._ready:
            try:
                self._work.put(self._ready[0], timeout=0.05)
            except queue.Full:
                return  # backpressure: keep it here; the queue depth is visible in STATUS
            self._ready.popleft()

    def _lstat(self, key: tuple[str, str]) -> os.stat_result | None:
        path = self._resolve(*key)
        if path is None:
            return None
        try:
            return os.lstat(path)
        except OSError:
            return None

    def _stat(self, key: tuple[str, str]) -> tuple[int, int, int, int] | None:
        st = self._lstat(key)
        return None if st is None else _identity(st)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What must stay the same for a file to have settled."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def settle_quiet_for(settings: Settings, watch: str) -> float:
    """The watch's own settle_quiet, else [daemon] settle_quiet."""
    for configured in settings.watch:
        if configured.id == watch and configured.settle_quiet is not None:
            return configured.settle_quiet
    return settings.daemon.settle_quiet


def is_ignored(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


# Work items a worker takes at once when the queue holds them: bounds the fds, memory and latency of a
# batch (its files are judged in turn before any is acted on) while amortising the fsyncs.
BATCH_MAX = 32


def fair_share(waiting: int, workers: int) -> int:
    """How many of `waiting` files one of `workers` takes: one, and a `workers`-th of the others, at
    most BATCH_MAX."""
    return min(BATCH_MAX, 1 + (waiting - 1) // max(1, workers))


def take_ready(work: queue.Queue[WorkItem | None], workers: int) -> tuple[list[WorkItem], int, bool]:
    """One item (waiting for it), then a fair share of what else the queue holds now (a `workers`-th,
    at most BATCH_MAX), never waiting for more: no worker hoards files that another could judge. Returns
    (the items, how many were taken from the queue, whether the stop marker None was taken)."""
    items: list[WorkItem | None] = [work.get()]
    limit = fair_share(1 + work.qsize(), workers)
    while len(items) < limit and items[-1] is not None:
        try:
            items.append(work.get_nowait())
        except queue.Empty:
            break
    stop = items[-1] is None
    batch = [item for item in items if item is not None]
    return batch, len(items), stop
