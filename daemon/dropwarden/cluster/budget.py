"""The bytes of file snapshots a watcher's files in flight may hold at once."""

from __future__ import annotations

import threading


class SnapshotBudget:
    """Bytes of file snapshots the files in flight may hold at once. A file is admitted holding the largest
    file there may be, and keeps only what it read once read: small files all go in flight, the largest
    ones a few at a time (the budget, or one when alone). Admission never waits: a file not admitted
    stays queued, and whoever releases bytes lets the queue try again."""

    def __init__(self, budget: int, largest: int) -> None:
        self.budget, self.largest = budget, largest
        self.held = 0
        self._lock = threading.Lock()

    def admit(self, wanted: int) -> int:
        """Reserve the largest file for up to `wanted` files; how many were."""
        with self._lock:
            admitted = 0
            while admitted < wanted and (self.held == 0 or self.held + self.largest <= self.budget):
                self.held += self.largest
                admitted += 1
            return admitted

    def shrink(self, reserved: int, size: int) -> int:
        """Keep `size` of a reservation of `reserved` bytes; what it holds now."""
        kept = min(size, reserved)
        if kept < reserved:
            self.release(reserved - kept)
        return kept

    def release(self, size: int) -> None:
        with self._lock:
            self.held -= size
