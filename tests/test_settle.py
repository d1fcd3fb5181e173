"""Settle, driven directly: real files, a real queue, short periods; when is a file complete?"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropwarden.config import Settings
from dropwarden.watch.settle import BATCH_MAX, Hint, Settler, WorkItem, settle_quiet_for, take_ready

QUIET = 0.05  # after close-write or move-in
STAT = 0.3  # a stable stat, for what no event vouches for
OPEN_WRITER = 1.2  # a create never followed by a close-write
SLACK = 0.5  # scheduling on a busy machine


class Folder:
    """One watched folder (watch id "inbox") and a Settler over it, feeding `work`."""

    def __init__(self, root: Path, *, maxsize: int = 0, **periods: object) -> None:
        self.root = root
        self.work: queue.Queue[WorkItem] = queue.Queue(maxsize=maxsize)
        self.losses: list[str] = []
        options: dict = {"quiet": QUIET, "stat_period": STAT, "open_writer_timeout": OPEN_WRITER}
        options.update(periods)
        self.settler = Settler(self._resolve, self.work, on_loss=self.losses.append, **options)

    def _resolve(self, watch: str, relpath: str) -> str | None:
        return str(self.root / relpath) if watch in ("inbox", "slow") else None

    def write(self, name: str, data: bytes = b"content\n") -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def next(self, timeout: float) -> WorkItem:
        return self.work.get(timeout=timeout)

    def nothing_within(self, seconds: float) -> bool:
        try:
            item = self.work.get(timeout=seconds)
        except queue.Empty:
            return True
        pytest.fail(f"handed on too early: {item}")

    def handed_on(self, timeout: float) -> list[str]:
        """Every relpath handed on until `timeout` passes with nothing new."""
        names = []
        while True:
            try:
                names.append(self.work.get(timeout=timeout).relpath)
            except queue.Empty:
                return names


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Folder]:
    made = Folder(tmp_path)
    made.settler.start()
    yield made
    made.settler.stop()


def started(tmp_path: Path, **options: object) -> Folder:
    made = Folder(tmp_path, **options)
    made.settler.start()
    return made


# ------------------------------------------------------------------------ complete by an event


def test_a_closed_file_is_handed_on_after_the_quiet_period(folder: Folder):
    folder.write("a.txt")
    began = time.monotonic()
    folder.settler.notify("inbox", "a.txt", Hint.CLOSED)
    item = folder.next(timeout=QUIET + SLACK)
    assert (item.watch, item.relpath, item.origin) == ("inbox", "a.txt", "event")
    assert time.monotonic() - began >= QUIET
    assert item.settled_at >= began
    assert folder.handed_on(QUIET * 4) == []  # once


def test_a_file_moved_in_is_handed_on_after_the_quiet_period(folder: Folder):
    folder.write("moved.txt")
    began = time.monotonic()
    folder.settler.notify("inbox", "moved.txt", Hint.MOVED_IN, "reconcile")
    item = folder.next(timeout=QUIET + SLACK)
    assert (item.relpath, item.origin) == ("moved.txt", "reconcile")
    assert time.monotonic() - began >= QUIET


def test_a_file_still_being_written_is_not_handed_on(folder: Folder):
    """Created and written to, never closed: it waits (up to open_writer_timeout) for its close-write,
    and goes on a quiet period after it."""
    path = folder.root / "big.bin"
    with path.open("wb") as writer:
        folder.settler.notify("inbox", "big.bin", Hint.CREATED)
        for _ in range(3):
            writer.write(b"x" * 1000)
            writer.flush()
            folder.settler.notify("inbox", "big.bin", Hint.MODIFIED)
            folder.nothing_within(STAT)
    closed = time.monotonic()
    folder.settler.notify("inbox", "big.bin", Hint.CLOSED)
    assert folder.next(timeout=QUIET + SLACK).relpath == "big.bin"
    assert time.monotonic() - closed < OPEN_WRITER


def test_a_writer_that_never_closes_is_handed_on_after_the_open_writer_timeout(folder: Folder):
    folder.write("held.txt")
    began = time.monotonic()
    folder.settler.notify("inbox", "held.txt", Hint.CREATED)
    folder.nothing_within(OPEN_WRITER - 0.2)
    assert folder.next(timeout=SLACK + 0.5).relpath == "held.txt"
    assert time.monotonic() - began >= OPEN_WRITER


# ------------------------------------------------------------------------ complete by a stable stat


def test_a_file_no_event_vouches_for_is_handed_on_once_its_stat_is_stable(folder: Folder):
    folder.write("found.txt")
    began = time.monotonic()
    folder.settler.notify("inbox", "found.txt", Hint.STAT, "reconcile")
    folder.nothing_within(STAT - 0.1)  # not after the quiet period only
    assert folder.next(timeout=SLACK).origin == "reconcile"
    assert time.monotonic() - began >= STAT


def test_a_file_that_keeps_changing_keeps_waiting(folder: Folder):
    path = folder.write("growing.txt", b"")
    folder.settler.notify("inbox", "growing.txt", Hint.STAT)
    for n in range(6):  # longer than two stat periods, changed twice within each
        with path.open("ab") as handle:
            handle.write(b"%d\n" % n)
        assert folder.nothing_within(STAT / 2)
    stopped = time.monotonic()
    assert folder.next(timeout=2 * STAT + SLACK).relpath == "growing.txt"
    assert time.monotonic() - stopped >= STAT / 2


def test_a_file_settling_by_stat_keeps_settling_by_stat_when_written_again(folder: Folder):
    """A polling observer's file that is modified is not held for open_writer_timeout."""
    path = folder.write("polled.txt")
    folder.settler.notify("inbox", "polled.txt", Hint.STAT)
    with path.open("ab") as handle:
        handle.write(b"more\n")
    folder.settler.notify("inbox", "polled.txt", Hint.MODIFIED)
    assert folder.next(timeout=2 * STAT + SLACK).relpath == "polled.txt"


def test_a_file_listed_in_a_new_directory_settles_by_stat_even_after_a_create(folder: Folder):
    """Its close-write may have come before the directory was watched: it is not held for it."""
    folder.write("early.txt")
    folder.settler.notify("inbox", "early.txt", Hint.CREATED)
    folder.settler.notify("inbox", "early.txt", Hint.FOUND)
    began = time.monotonic()
    assert folder.next(timeout=STAT + SLACK).relpath == "early.txt"
    assert time.monotonic() - began < OPEN_WRITER


def test_a_sweep_does_not_shorten_the_wait_for_a_writer(folder: Folder):
    """A reconcile find of a file whose create was seen (a writer may still hold it) changes nothing."""
    folder.write("open.txt")
    folder.settler.notify("inbox", "open.txt", Hint.CREATED)
    folder.settler.notify("inbox", "open.txt", Hint.STAT, "reconcile")
    folder.nothing_within(STAT + 0.3)
    assert folder.next(timeout=OPEN_WRITER + SLACK).origin == "event"


# ------------------------------------------------------------------------ nothing to judge, or nothing to wait for


def test_a_file_deleted_while_settling_is_dropped(folder: Folder):
    folder.write("gone.txt").unlink()
    folder.settler.notify("inbox", "gone.txt", Hint.CLOSED)
    folder.write("deleted.txt")
    folder.settler.notify("inbox", "deleted.txt", Hint.CLOSED)
    folder.settler.notify("inbox", "deleted.txt", Hint.DELETED)
    path = folder.write("vanishing.txt")
    folder.settler.notify("inbox", "vanishing.txt", Hint.STAT)
    path.unlink()  # no event for it: the stat at the deadline finds it gone
    assert folder.handed_on(STAT + SLACK) == []
    assert folder.settler.pending == 0


def test_a_name_of_an_unknown_watch_is_dropped(folder: Folder):
    folder.write("a.txt")
    folder.settler.notify("elsewhere", "a.txt", Hint.CLOSED)
    assert folder.handed_on(QUIET + SLACK) == []


def test_links_fifos_and_hard_links_go_to_the_queue_the_moment_they_are_created(tmp_path: Path):
    """Nothing is written into them: intake refuses them at once, without waiting for a writer."""
    folder = started(tmp_path, quiet=5.0, stat_period=5.0, open_writer_timeout=10.0)
    try:
        os.symlink("/etc/passwd", tmp_path / "link")
        os.mkfifo(tmp_path / "fifo")
        os.link(folder.write("one.txt"), tmp_path / "two.txt")
        for name in ("link", "fifo", "two.txt"):
            folder.settler.notify("inbox", name, Hint.CREATED)
        assert sorted(folder.handed_on(SLACK)) == ["fifo", "link", "two.txt"]
    finally:
        folder.settler.stop()


# ------------------------------------------------------------------------ a watch's own quiet period


def test_each_watch_waits_its_own_quiet_period_after_a_close(tmp_path: Path):
    """A watch whose writer closes the file between chunks sets a longer settle_quiet."""
    periods = {"inbox": QUIET, "slow": 1.0}
    folder = started(tmp_path, quiet_for=periods.__getitem__)
    try:
        folder.write("fast.txt")
        folder.write("chunked.txt")
        began = time.monotonic()
        folder.settler.notify("slow", "chunked.txt", Hint.CLOSED)
        folder.settler.notify("inbox", "fast.txt", Hint.CLOSED)
        assert folder.next(timeout=QUIET + SLACK).watch == "inbox"
        assert time.monotonic() - began < 1.0
        slow = folder.next(timeout=1.0 + SLACK)
        assert slow.watch == "slow" and time.monotonic() - began >= 1.0
    finally:
        folder.settler.stop()


def test_a_watch_without_its_own_settle_quiet_uses_the_daemons(tmp_path: Path):
    settings = Settings(
        daemon={"settle_quiet": 0.25},
        watch=[
            {"path": str(tmp_path / "a"), "name": "a", "settle_quiet": 2.5},
            {"path": str(tmp_path / "b"), "name": "b"},
        ],
    )
    assert settle_quiet_for(settings, "a") == 2.5
    assert settle_quiet_for(settings, "b") == 0.25
    assert settle_quiet_for(settings, "unknown") == 0.25


# ------------------------------------------------------------------------ backpressure


def test_a_full_queue_holds_settled_files_and_loses_none(tmp_path: Path):
    folder = started(tmp_path, maxsize=1)
    try:
        names = [f"f{n}.txt" for n in range(6)]
        for name in names:
            folder.write(name)
            folder.settler.notify("inbox", name, Hint.CLOSED)
        time.sleep(QUIET + SLACK)  # all settled; one fits in the queue
        assert folder.work.qsize() == 1
        assert folder.settler.pending == len(names) - 1
        assert sorted(folder.handed_on(SLACK)) == names
        assert folder.settler.pending == 0
        assert folder.losses == []
    finally:
        folder.settler.stop()


def test_an_overfull_inbox_reports_what_it_drops(tmp_path: Path):
    """The watch threads never block: past the inbox limit a name is dropped and reported (reconcile
    finds it later)."""
    folder = Folder(tmp_path, inbox_limit=2)  # not started: nothing drains the inbox
    for n in range(3):
        folder.settler.notify("inbox", f"{n}.txt", Hint.CLOSED)
    assert folder.losses == ["settle inbox full"]
    assert folder.settler.pending == 2


def test_a_worker_takes_a_fair_share_of_what_is_queued_never_all_of_it():
    """A worker takes one item, then what else is queued divided among the workers (at most BATCH_MAX),
    without waiting: with slow files, one worker must not hoard what another could judge meanwhile."""
    work: queue.Queue[WorkItem | None] = queue.Queue()
    for index in range(10):
        work.put(WorkItem("inbox", f"f{index}.txt", "event"))
    batch, taken, stop = take_ready(work, workers=2)
    assert [item.relpath for item in batch] == [f"f{index}.txt" for index in range(5)]
    assert (taken, stop) == (5, False)
    batch, taken, stop = take_ready(work, workers=1)
    assert len(batch) == taken == 5 and not stop

    for index in range(100):
        work.put(WorkItem("inbox", f"g{index}.txt", "event"))
    work.put(None)
    assert len(take_ready(work, workers=1)[0]) == BATCH_MAX
    batch, taken, stop = take_ready(work, workers=1)
    assert len(batch) == BATCH_MAX and taken == BATCH_MAX and not stop
    while not stop:
        batch, taken, stop = take_ready(work, workers=1)
    assert taken == len(batch) + 1  # the stop marker is counted as taken, never handed on
