"""Workers take turns at short Python work, so that two of them do not trade the GIL at every system call."""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Files larger than this are judged without the turn: their reading, hashing and scanning are long
# enough to share the interpreter with the other workers, as threads always did.
LARGE_FILE_BYTES = 1024 * 1024

_local = threading.local()  # .turn: the Turn this thread holds, if any


class Turn:
    """A fair lock held by a judging worker for its batch, handed straight to the next one in line.

    Two worker threads that both run Python hand the GIL to each other at nearly every system call
    (stat, read, an SQLite step): ~100 futex wake-ups per 4 KB file, which made two workers cost
    ~40 % more CPU per file than one. With the turn, the other worker waits here instead, and a
    worker keeps the GIL from one system call to the next. Work that waits (a detector called in a
    thread, a child process, a disk flush), long work (a file or a view above LARGE_FILE_BYTES) and
    the files of a watch on a network file system (polled, or by its mount type: reads there can
    stall) are done `without_turn`, so the other workers run meanwhile, as before.

    Deadlock-free by construction: a thread takes the turn only while it holds no other lock (at the
    start of a batch, and at the end of a `without_turn` block wrapped around a whole call that takes
    and releases its own locks), so whoever holds the turn never waits for a thread that waits for it.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: collections.deque[threading.Lock] = collections.deque()
        self._held = False

    def acquire(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                waiter = None
            else:
                waiter = threading.Lock()
                waiter.acquire()
                self._waiters.append(waiter)
        if waiter is not None:
            try:
                waiter.acquire()  # released by the holder, who handed the turn over (still held)
            except BaseException:  # interrupted (a signal): leave the line, or pass on the turn
                with self._mutex:
                    queued = waiter in self._waiters
                    if queued:
                        self._waiters.remove(waiter)
                if not queued:
                    self.release()
                raise
        _local.turn = self

    def release(self) -> None:
        _local.turn = None
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False

    @contextmanager
    def held(self) -> Iterator[None]:
        """The turn for the block, if this thread does not hold it already."""
        if getattr(_local, "turn", None) is self:
            yield
            return
        self.acquire()
        try:
            yield
        finally:
            self.release()


@contextmanager
def without_turn() -> Iterator[None]:
    """A block during which the calling thread lets the other workers run: it waits (on a thread, a
    child process, a server, a disk flush) or works long. Its turn, if it holds one, passes to the
    next worker in line and is taken back after the block; without one, nothing happens.

    Wrap a whole call that takes and releases its own locks, never a part of one: the turn is taken
    back at the end of the block, which must not hold a lock another worker could be waiting for."""
    turn: Turn | None = getattr(_local, "turn", None)
    if turn is None:
        yield
        return
    turn.release()
    try:
        yield
    finally:
        turn.acquire()


def without_turn_if(condition: bool) -> contextlib.AbstractContextManager[None]:
    """`without_turn()` if `condition` holds (the block will wait); else nothing."""
    return without_turn() if condition else contextlib.nullcontext()


def without_turn_for_file(size: int, may_stall: bool) -> contextlib.AbstractContextManager[None]:
    """`without_turn()` for work on a file of `size` bytes above LARGE_FILE_BYTES, or on a watch that is
    on a network file system (`may_stall`: a read or a rename there can stall); else nothing."""
    return without_turn_if(size > LARGE_FILE_BYTES or may_stall)
