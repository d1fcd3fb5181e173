"""The bytes of file snapshots a watcher's files in flight may hold at once."""

from __future__ import annotations

import threading


class SnapshotBudget:
    """Bytes of file snapshots the files in flight may hold at once. Before a file is read, the largest file
    there may be is reserved; once read, it keeps what it read: small files all go in flight, the
    largest ones a few at a time (the budget, or one when alone). Nothing waits here: a file that finds
    no room waits in the queue, and whoever releases bytes lets the queue try again."""

    def __init__(self, budget: int, largest: int) -> None:
        self.budget, self.largest = budget, largest
        self.held = 0
        self._lock = threading.Lock()

    def has_room(self) -> bool:
        """Whether the largest file could be reserved now."""
        with self._lock:
            return self._fits()

    def reserve(self) -> bool:
        """Reserve the largest file, if it fits."""
        with self._lock:
            if not self._fits():
                return False
            self.held += self.largest
            return True

    def shrink(self, reserved: int, size: int) -> int:
        """Keep `size` of a reservation of `reserved` bytes; what it holds now."""
        kept = min(size, reserved)
        if kept < reserved:
            self.release(reserved - kept)
        return kept

    def release(self, size: int) -> None:
        with self._lock:
            self.held -= size

    def _fits(self) -> bool:
        return self.held == 0 or self.held + self.largest <= self.budget
