"""The queue between the settler and the workers: settled files, and the answers that came back for files
in flight elsewhere (role "watch"), which a worker takes first."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from dropwarden.watch.settle import BATCH_MAX, WorkItem, fair_share


def admit_all(waiting: int) -> int:
    return waiting


class WorkQueue:
    """`queue.Queue`'s interface for the settler and the daemon (put, get, qsize, task_done,
    unfinished_tasks), and `take` for workers whose files wait for an answer without holding a thread:
    answers first, then files while `admit` lets more begin (it is asked under this queue's lock, and
    whatever frees room calls `reconsider`). The stop marker None is a file like any other."""

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self.unfinished_tasks = 0
        self.admit: Callable[[int], int] = admit_all  # files waiting -> how many may begin now
        self._files: deque[WorkItem | None] = deque()
        self._answers: deque[Any] = deque()
        self._starved = False  # a file was refused admission since the last `reconsider`
        self._lock = threading.Lock()
        self._takeable = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)

    # ------------------------------------------------------------------------------------ queue.Queue

    def put(self, item: WorkItem | None, block: bool = True, timeout: float | None = None) -> None:
        with self._not_full:
            if self.maxsize > 0 and item is not None:
                deadline = None if timeout is None else time.monotonic() + timeout
                while len(self._files) >= self.maxsize:
                    left = None if deadline is None else deadline - time.monotonic()
                    if not block or (left is not None and left <= 0):
                        raise queue.Full
                    self._not_full.wait(left)
            self._files.append(item)
            self.unfinished_tasks += 1
            self._takeable.notify()

    def put_nowait(self, item: WorkItem | None) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> WorkItem | None:
        """One file, whatever `admit` says (role "all", and draining at a stop)."""
        with self._takeable:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._files:
                left = None if deadline is None else deadline - time.monotonic()
                if not block or (left is not None and left <= 0):
                    raise queue.Empty
                self._takeable.wait(left)
            item = self._files.popleft()
            self._not_full.notify()
            return item

    def get_nowait(self) -> WorkItem | None:
        return self.get(block=False)

    def qsize(self) -> int:
        with self._lock:
            return len(self._files)

    def task_done(self, count: int = 1) -> None:
        with self._lock:
            if count > self.unfinished_tasks:
                raise ValueError("task_done() called too many times")
            self.unfinished_tasks -= count

    # ------------------------------------------------------------------------------------ in flight

    def put_back(self, items: list[WorkItem]) -> None:
        """Files taken and not begun (no room for their bytes yet): first in line again, still unfinished.
        No one is woken: room comes with a `reconsider`."""
        with self._lock:
            self._files.extendleft(reversed(items))
            self._starved = True

    def answer(self, entry: Any) -> None:
        """An answer for a file in flight (never blocks: it frees what it holds once taken)."""
        with self._lock:
            self._answers.append(entry)
            self._takeable.notify()

    def reconsider(self) -> None:
        """Room was freed: a worker waiting for it may take files now."""
        with self._lock:
            if self._starved:  # no one waits for room otherwise: wake no one
                self._starved = False
                self._takeable.notify_all()

    def take(self, workers: int) -> tuple[list[Any], list[WorkItem], int, bool]:
        """The answers that came (up to BATCH_MAX), then a fair share of the files (a `workers`-th of
        what waits, BATCH_MAX at most) that `admit` lets begin; waits until there is one or the other.
        Returns (answers, files, files taken from the queue, whether the stop marker was taken)."""
        with self._takeable:
            while True:
                answers = [self._answers.popleft() for _ in range(min(BATCH_MAX, len(self._answers)))]
                files: list[WorkItem] = []
                stop = False
                if self._files and self._files[0] is None:
                    if not answers:  # the answers that came before a stop are still acted on
                        self._files.popleft()
                        stop = True
                elif self._files:
                    share = fair_share(len(self._files), workers)
                    waiting = 0
                    while waiting < share and self._files[waiting] is not None:
                        waiting += 1
                    admitted = self.admit(waiting)
                    self._starved = self._starved or admitted < waiting
                    for _ in range(admitted):
                        files.append(self._files.popleft())  # type: ignore[arg-type]
                if answers or files or stop:
                    if files:
                        self._not_full.notify(len(files))
                    return answers, files, len(files) + stop, stop
                self._takeable.wait()
