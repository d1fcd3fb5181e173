"""The bytes of file snapshots a watcher's judging threads may hold at once."""

from __future__ import annotations

import threading


class SnapshotBudget:
    """Bytes of file snapshots the judging threads may hold at once. A task reserves the largest file
    there may be before it reads one, then keeps only what it read: small files all go in flight, the
    largest ones a few at a time (the budget, or one when alone)."""

    def __init__(self, budget: int, largest: int) -> None:
        self.budget, self.largest = budget, largest
        self.held = 0
        self._changed = threading.Condition()

    def reserve(self) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self.held == 0 or self.held + self.largest <= self.budget)
            self.held += self.largest
        return self.largest

    def shrink(self, reserved: int, size: int) -> int:
        """Keep `size` of a reservation of `reserved` bytes; what it holds now."""
        kept = min(size, reserved)
        self.release(reserved - kept)
        return kept

    def release(self, size: int) -> None:
        with self._changed:
            self.held -= size
            self._changed.notify_all()
