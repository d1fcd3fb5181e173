"""The bytes of file snapshots a watcher's judging threads may hold at once."""

from __future__ import annotations

import threading
from collections import deque


class SnapshotBudget:
    """Bytes of file snapshots the judging threads may hold at once. A thread reserves the largest file
    there may be before it reads one, then keeps only what it read: small files all go in flight, the
    largest ones a few at a time (the budget, or one when alone). Waiters are served in turn, each woken
    once, when its reservation fits: dozens of threads waiting are not all woken by every release."""

    def __init__(self, budget: int, largest: int) -> None:
        self.budget, self.largest = budget, largest
        self.held = 0
        self._lock = threading.Lock()
        self._waiting: deque[threading.Event] = deque()

    def reserve(self) -> int:
        with self._lock:
            if not self._waiting and self._fits():
                self.held += self.largest
                return self.largest
            granted = threading.Event()
            self._waiting.append(granted)
        granted.wait()  # `release` counted it as held before waking it
        return self.largest

    def shrink(self, reserved: int, size: int) -> int:
        """Keep `size` of a reservation of `reserved` bytes; what it holds now."""
        kept = min(size, reserved)
        if kept < reserved:
            self.release(reserved - kept)
        return kept

    def release(self, size: int) -> None:
        with self._lock:
            self.held -= size
            while self._waiting and self._fits():
                self.held += self.largest
                self._waiting.popleft().set()

    def _fits(self) -> bool:
        return self.held == 0 or self.held + self.largest <= self.budget
