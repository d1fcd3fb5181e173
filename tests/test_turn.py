"""Workers take turns at judging: one at a time runs Python, and none keeps the turn while it waits."""

from __future__ import annotations

import io
import random
import signal
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from dropwarden.judge.turn import LARGE_FILE_BYTES, Turn, without_turn

from .daemon_harness import audit_records
from .test_act_batch import in_process_pipeline
from .test_daemon import CLEAN, Drop


def _in_thread(target: Any) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_the_turn_passes_to_waiting_workers_in_the_order_they_came() -> None:
    turn, order = Turn(), []
    turn.acquire()

    def worker(name: str) -> None:
        with turn.held():
            order.append(name)

    threads = []
    for name in ("first", "second", "third"):
        threads.append(_in_thread(lambda name=name: worker(name)))
        _until(lambda: len(turn._waiters) == len(threads))
    turn.release()
    for thread in threads:
        thread.join(5)
    assert order == ["first", "second", "third"]


def test_a_worker_that_waits_lets_the_next_one_run_and_then_takes_its_turn_back() -> None:
    turn, events = Turn(), []
    other_ran, waiting = threading.Event(), threading.Event()

    def waiter() -> None:
        with turn.held():
            events.append("waiter starts")
            with without_turn():
                waiting.set()
                assert other_ran.wait(5), "the other worker never got the turn"
            events.append("waiter ends")

    def other() -> None:
        with turn.held():
            events.append("other runs")
            other_ran.set()
            time.sleep(0.05)  # the waiter is done waiting, and waits for the turn instead
            events.append("other ends")

    first = _in_thread(waiter)
    assert waiting.wait(5)
    second = _in_thread(other)
    first.join(5)
    second.join(5)
    assert events == ["waiter starts", "other runs", "other ends", "waiter ends"]


def test_outside_a_turn_without_turn_changes_nothing() -> None:
    turn = Turn()
    # taken again by its holder: already held, not a deadlock
    with without_turn(), turn.held(), turn.held():
        pass
    turn.acquire()  # free again
    turn.release()


class Rendezvous:
    """Holds the judging of the file `a.*` (its views of at least `min_size` characters) until `b.txt`
    has been judged: the second worker must get a turn while the first one is inside this detector,
    or `a.*` ends unscanned."""

    id, version, view_kinds = "rendezvous", "1", frozenset({"text"})

    def __init__(self, bounded: bool, min_size: int) -> None:
        self.bounded, self.min_size = bounded, min_size
        self.entered, self.b_judged = threading.Event(), threading.Event()

    def detect(self, view: Any, ctx: Any) -> list:
        if Path(ctx.display_path).name == "b.txt":
            self.b_judged.set()
        elif Path(ctx.display_path).name.startswith("a.") and len(view.sliceable) >= self.min_size:
            self.entered.set()
            if not self.b_judged.wait(3):
                raise TimeoutError("b.txt was not judged while a.* waited")
        return []


def _large_text(size: int) -> bytes:
    return (CLEAN * (size // len(CLEAN) + 1))[:size].encode()


def _zip_of_large_text(size: int) -> bytes:
    """A zip under 1 MiB of a text over it, compressed well below the extractor's max_ratio."""
    rng = random.Random(7)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "status",
        "report",
        "weekly",
        "nominal",
        "team",
        "notes",
        "plan",
        "draft",
        "review",
    ]
    text = " ".join(rng.choice(words) for _ in range(size // 5))[:size].encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("notes.txt", text)
    assert len(out.getvalue()) < LARGE_FILE_BYTES < size
    return out.getvalue()


# case: (detector bounded, file name, content, how the watch is on a network file system, min view size)
CASES = {
    "a detector called in a thread": (False, "a.txt", _large_text(4096), "", 0),
    "a large file judged inline": (True, "a.txt", _large_text(LARGE_FILE_BYTES + 1), "", 0),
    "a small archive of a large text": (
        True, "a.zip", _zip_of_large_text(2 * LARGE_FILE_BYTES), "", LARGE_FILE_BYTES + 1
    ),
    "a file on a polled watch (a network file system)": (True, "a.txt", _large_text(4096), "polling", 0),
    "a file on an inotify watch whose root is on NFS": (True, "a.txt", _large_text(4096), "nfs4", 0),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_while_one_worker_waits_on_a_file_another_judges_the_next(tmp_path: Path, case: str) -> None:
    """Two workers of the real pipeline: `a.*`'s detector waits (a model server, say) until `b.txt` is
    judged. The wait is done without the turn when the core calls the detector in a thread, when the
    file is above LARGE_FILE_BYTES, when the view is (a small archive's large text), and on a network
    file system (a polled watch, or one whose root's mount says so). Each way both files are judged
    clean."""
    from dropwarden.watch.settle import WorkItem

    bounded, name, content, network, min_size = CASES[case]
    drop = Drop(tmp_path, extra="[ocr]\nenabled = false\n", release=False)
    if network == "polling":
        text = drop.config.read_text()
        drop.config.write_text(text.replace("[[alerts.sink]]", 'observer = "polling"\n[[alerts.sink]]'))
    (drop.inbox / name).write_bytes(content)
    (drop.inbox / "b.txt").write_text(CLEAN)
    rendezvous = Rendezvous(bounded, min_size)
    with in_process_pipeline(drop) as (pipeline, watch, runtime):
        if network and network != "polling":
            watch.file_system = network  # as `arm` finds it on a host with that mount
        assert watch.may_stall is bool(network)
        runtime.judge.registry.add("detectors", "tests", rendezvous)
        first = _in_thread(lambda: pipeline.process_batch([WorkItem(watch.id, name, "test")]))
        assert rendezvous.entered.wait(10)
        second = _in_thread(lambda: pipeline.process_batch([WorkItem(watch.id, "b.txt", "test")]))
        first.join(10)
        second.join(10)
    decisions = [r["body"] for r in audit_records(drop.audit) if r["type"] == "decision"]
    assert sorted((Path(d["path"]).name, d["verdict"]) for d in decisions) == [
        (name, "clean"),
        ("b.txt", "clean"),
    ]


class _Interrupted(Exception):
    pass


def test_a_worker_interrupted_while_it_waits_for_the_turn_leaves_the_line() -> None:
    """A signal that interrupts a thread waiting for the turn takes it out of the line: the turn, once
    free, goes to the next worker, not to a waiter that has gone."""
    turn, release_holder = Turn(), threading.Event()

    def holder() -> None:
        with turn.held():
            release_holder.wait(5)

    first = _in_thread(holder)
    _until(lambda: turn._held)

    def interrupt(_signum: int, _frame: Any) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(_Interrupted):
            turn.acquire()  # the main thread, interrupted while it waits
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    release_holder.set()
    first.join(5)
    took = threading.Event()
    _in_thread(lambda: (turn.acquire(), took.set(), turn.release()))
    assert took.wait(5), "the turn went to the interrupted waiter, and no one else can have it"
