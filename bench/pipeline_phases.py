"""Where a file's CPU goes inside the pipeline, and what judging it in a child process would save.

    PYTHONPATH=daemon:plugins .venv/bin/python bench/pipeline_phases.py [--files 3000] [--dir DIR]

In one thread, no events: 4 KB files already in an inbox go through `Pipeline.process_batch` 32 at a
time (as a worker takes them), once on a plain watch and once with `release_to`. Each phase is timed
by a wrapper with the thread's CPU clock and reported inclusive (a phase's time holds its callees'),
in µs per file. The last lines weigh the one design that would take work off this thread: judging in
a child process (`docs/multiprocess-judging.md`). Judging a file's name and content here costs what
`Judge.judge_relative_name` and `Judge.judge_snapshot` cost; in a child, this thread would instead
send the snapshot and take back its `Content` (the cluster's codec) over a pipe, 32 files a message,
which is timed against a child that answers at once.
"""

from __future__ import annotations

import argparse
import collections
import functools
import multiprocessing
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dropbench import BODY_4K, write_config

BATCH = 32


class PhaseClock:
    """Thread CPU per wrapped function, inclusive."""

    def __init__(self) -> None:
        self.spent: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def wrap(self, owner: Any, name: str) -> None:
        function = getattr(owner, name)
        label = f"{getattr(owner, '__name__', owner)}.{name}"

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.spent[label] += time.thread_time() - started
                self.calls[label] += 1

        setattr(owner, name, timed)

    def clear(self) -> None:
        self.spent.clear()
        self.calls.clear()


def wrap_phases(clock: PhaseClock) -> None:
    from dropwarden import pipeline, state
    from dropwarden.act import batch, decided
    from dropwarden.audit import log
    from dropwarden.judge import judge

    for owner, names in (
        (judge.Judge, ("judge_relative_name", "judge_snapshot")),
        (judge, ("take_snapshot",)),
        (pipeline.Pipeline, ("_process", "_decide", "act_on", "_record_all")),
        (pipeline, ("recorded",)),
        (log.AuditLog, ("append_many", "sync")),
        (state.State, ("record_judged_many", "judged_verdict", "pending_operator_release")),
        (state.State, ("add_intents", "finish_intents")),
        (decided, ("remember",)),
        (batch, ("release_batch",)),
    ):
        for name in names:
            clock.wrap(owner, name)


def in_thread(root: Path, release: bool, files: int, clock: PhaseClock) -> float:
    """µs of thread CPU per file for `process_batch` (the phases' times in `clock`)."""
    from dropwarden.audit import AuditLog
    from dropwarden.config import AuditSettings
    from dropwarden.configload import load_config
    from dropwarden.pipeline import Pipeline, PipelineContext
    from dropwarden.runtime import build_runtime
    from dropwarden.state import State
    from dropwarden.watch.activewatch import arm
    from dropwarden.watch.settle import WorkItem

    config = write_config(root, release=release)
    names = [f"file-{index:06d}.txt" for index in range(files)]
    for name in names:
        (root / "inbox" / name).write_bytes(BODY_4K)
    settings = load_config(config).settings
    runtime = build_runtime(settings)
    watch = arm(settings.watch[0])
    state = State(root / "state" / "state.db")
    audit = AuditLog.open(root / "audit.jsonl", root / "state", AuditSettings(path=root / "audit.jsonl"))
    pipeline = Pipeline(
        PipelineContext({watch.id: watch}, runtime.judge, "bench", []), state, audit, None, print
    )
    items = [WorkItem(watch.id, name, "bench") for name in names]
    warm = min(100, files // 10)
    pipeline.process_batch(items[:warm])
    clock.clear()
    started = time.thread_time()
    for low in range(warm, files, BATCH):
        pipeline.process_batch(items[low : low + BATCH])
    per_file = (time.thread_time() - started) / (files - warm) * 1e6
    audit.close()
    state.close()
    runtime.close()
    return per_file


def child_costs(root: Path, files: int) -> tuple[float, float, float]:
    """(name, content) judging µs per file in this thread, and this thread's µs per file for the same
    files judged by a child (the snapshot out, the Content back)."""
    from dropwarden.cluster import codec
    from dropwarden.configload import load_config
    from dropwarden.judge.intake import take_snapshot
    from dropwarden.runtime import build_runtime

    config = write_config(root, release=False)
    inbox = root / "inbox"
    runtime = build_runtime(load_config(config).settings)
    judge = runtime.judge
    names = [f"file-{index:06d}.txt" for index in range(files)]
    for name in names:
        (inbox / name).write_bytes(BODY_4K)
    dir_fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY)
    try:
        snapshots = [take_snapshot(dir_fd, name, display_path=name, max_size=1 << 20) for name in names]
    finally:
        os.close(dir_fd)
    name_us = _per_file(lambda: [judge.judge_relative_name(name, name) for name in names], files)
    contents: list[Any] = []
    content_us = _per_file(lambda: contents.extend(judge.judge_content(s) for s in snapshots), files)
    answer = codec.encode(contents[0])
    parent, child_end = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_answer, args=(child_end, answer), daemon=True)
    child.start()

    def round_trips() -> None:
        for low in range(0, files, BATCH):
            high = low + BATCH
            batch = [(name, s.data) for name, s in zip(names[low:high], snapshots[low:high], strict=True)]
            parent.send_bytes(pickle.dumps(batch))
            for raw in pickle.loads(parent.recv_bytes()):
                codec.decode(raw)

    ipc_us = _per_file(round_trips, files)
    parent.send_bytes(b"")
    child.join(5)
    runtime.close()
    return name_us, content_us, ipc_us


def _answer(connection: Any, answer: bytes) -> None:
    while raw := connection.recv_bytes():
        connection.send_bytes(pickle.dumps([answer] * len(pickle.loads(raw))))


def _per_file(work: Callable[[], object], files: int) -> float:
    started = time.thread_time()
    work()
    return (time.thread_time() - started) / files * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--dir", type=Path, help="where the inboxes go (default: the temp folder)")
    args = parser.parse_args()
    from dropwarden.logs import configure

    configure("warning", True)
    with tempfile.TemporaryDirectory(prefix="dw-phases-", dir=args.dir) as tmp:
        name_us, content_us, ipc_us = child_costs(Path(tmp), args.files)
    clock = PhaseClock()
    wrap_phases(clock)
    for release in (False, True):
        with tempfile.TemporaryDirectory(prefix="dw-phases-", dir=args.dir) as tmp:
            per_file = in_thread(Path(tmp), release, args.files, clock)
        counted = args.files - min(100, args.files // 10)
        print(
            f"{'release_to' if release else 'plain'} watch: process_batch {per_file:.1f} µs of CPU per file"
        )
        for label, spent in sorted(clock.spent.items(), key=lambda item: -item[1]):
            share = clock.calls[label] / counted
            print(f"  {spent / counted * 1e6:7.1f} µs/file  {share:5.2f} calls/file  {label}")
    print(f"judging here: name {name_us:.1f} + content {content_us:.1f} µs/file")
    print(f"judging in a child, this thread's share: {ipc_us:.1f} µs/file (4 KB out, the Content back)")


if __name__ == "__main__":
    main()
