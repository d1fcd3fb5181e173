"""Workers take turns at judging: one at a time runs Python, and none keeps the turn while it waits."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dropwarden.audit import AuditLog
from dropwarden.config import AuditSettings
from dropwarden.judge.turn import LARGE_FILE_BYTES, Turn, without_turn
from dropwarden.state import State
from dropwarden.watch.activewatch import arm

from .daemon_harness import audit_records
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
    """Holds the judging of `a.txt` until `b.txt` has been judged: the second worker must get a turn
    while the first one is inside this detector, or `a.txt` ends unscanned."""

    id, version, view_kinds = "rendezvous", "1", frozenset({"text"})

    def __init__(self, bounded: bool) -> None:
        self.bounded = bounded
        self.entered, self.b_judged = threading.Event(), threading.Event()

    def detect(self, view: Any, ctx: Any) -> list:
        if ctx.display_path.endswith("b.txt"):
            self.b_judged.set()
        elif ctx.display_path.endswith("a.txt"):
            self.entered.set()
            if not self.b_judged.wait(3):
                raise TimeoutError("b.txt was not judged while a.txt waited")
        return []


@pytest.mark.parametrize(
    "bounded, size",
    [(False, 4096), (True, LARGE_FILE_BYTES + 1)],
    ids=["a detector called in a thread", "a large file judged inline"],
)
def test_while_one_worker_waits_on_a_file_another_judges_the_next(
    tmp_path: Path, bounded: bool, size: int
) -> None:
    """Two workers of the real pipeline: `a.txt`'s detector waits (a model server, say) until `b.txt`
    is judged. A detector the core calls in a thread is waited for without the turn; so is every
    detector on a file above LARGE_FILE_BYTES. Either way both files are judged clean."""
    from dropwarden.configload import load_config
    from dropwarden.pipeline import Pipeline, PipelineContext
    from dropwarden.runtime import build_runtime
    from dropwarden.watch.settle import WorkItem

    drop = Drop(tmp_path, extra="[ocr]\nenabled = false\n", release=False)
    (drop.inbox / "a.txt").write_text((CLEAN * (size // len(CLEAN) + 1))[:size])
    (drop.inbox / "b.txt").write_text(CLEAN)
    settings = load_config(drop.config).settings
    runtime = build_runtime(settings)
    rendezvous = Rendezvous(bounded)
    runtime.judge.registry.add("detectors", "tests", rendezvous)
    watch = arm(settings.watch[0])
    state = State(drop.state / "state.db")
    audit = AuditLog.open(drop.audit, drop.state, AuditSettings(path=drop.audit), background=False)
    try:
        context = PipelineContext({watch.id: watch}, runtime.judge, "test", [])
        pipeline = Pipeline(context, state, audit, None, lambda *args: None)  # type: ignore[arg-type]
        first = _in_thread(lambda: pipeline.process_batch([WorkItem(watch.id, "a.txt", "test")]))
        assert rendezvous.entered.wait(5)
        second = _in_thread(lambda: pipeline.process_batch([WorkItem(watch.id, "b.txt", "test")]))
        first.join(10)
        second.join(10)
    finally:
        audit.close()
        state.close()
        watch.close()
        runtime.close()
    decisions = [r["body"] for r in audit_records(drop.audit) if r["type"] == "decision"]
    assert sorted((Path(d["path"]).name, d["verdict"]) for d in decisions) == [
        ("a.txt", "clean"),
        ("b.txt", "clean"),
    ]
