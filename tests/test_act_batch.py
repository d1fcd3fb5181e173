"""Files acted on together: a batch of releases keeps every guarantee a single release has."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dropwarden.act import fsops
from dropwarden.act.handover import CopyMove, NotTheJudgedFile, Vanished, hand_over_copies, is_work_name
from dropwarden.act.quarantine import QuarantineStore
from dropwarden.act.recovery import recover
from dropwarden.audit import AuditLog
from dropwarden.config import AuditSettings
from dropwarden.judge.intake import Snapshot, take_snapshot
from dropwarden.state import State
from dropwarden.watch.activewatch import arm

from .crash_steps import die_after, handover_steps
from .daemon_harness import audit_records
from .test_act_hardening import drop_settings
from .test_daemon import CLEAN, PII, Drop

NAMES = ["a.txt", "b.txt", "c.txt"]


def _snapshot(dir_fd: int, name: str) -> Snapshot:
    snapshot = take_snapshot(dir_fd, name, display_path=name, max_size=1 << 20)
    assert isinstance(snapshot, Snapshot)
    return snapshot


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "without-syncfs"])
def test_a_batch_hands_over_each_file_or_says_why_not_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncfs: bool
) -> None:
    """Of three files judged together, one changed after it was judged (put back, NotTheJudgedFile), one
    vanished (Vanished), one unchanged: only that one is released, with exactly the judged bytes and its
    permission bits; the changed one is back in the folder with its new bytes; no work file is left.
    The same where the C library has no syncfs(2) (each file then handed over and fsynced alone)."""
    if not syncfs:
        monkeypatch.setattr(fsops, "_syncfs", None)
    inbox, outbound, store_dir = tmp_path / "inbox", tmp_path / "outbound", tmp_path / "q"
    inbox.mkdir()
    outbound.mkdir()
    for name in NAMES:
        (inbox / name).write_bytes(f"{name}: {CLEAN}".encode())
    os.chmod(inbox / "c.txt", 0o640)
    store = QuarantineStore.open(store_dir, same_fs_as_fd=None, create=True)
    src_fd, dst_fd = os.open(inbox, os.O_RDONLY), os.open(outbound, os.O_RDONLY)
    try:
        snapshots = {name: _snapshot(src_fd, name) for name in NAMES}
        with open(inbox / "a.txt", "ab") as changed:
            changed.write(b"written after judging")
        (inbox / "b.txt").unlink()
        moves = [
            CopyMove(src_fd, name, f"{index:032x}", snapshots[name], dst_fd, name, f"{index:08x}")
            for index, name in enumerate(NAMES)
        ]
        outcomes = hand_over_copies(store, moves)
    finally:
        os.close(src_fd)
        os.close(dst_fd)
    assert isinstance(outcomes[0], NotTheJudgedFile)
    assert isinstance(outcomes[1], Vanished)
    assert outcomes[2] == "c.txt"
    assert sorted(p.name for p in outbound.iterdir()) == ["c.txt"]
    assert (outbound / "c.txt").read_bytes() == f"c.txt: {CLEAN}".encode()
    assert stat.S_IMODE(os.stat(outbound / "c.txt").st_mode) == 0o640
    assert sorted(p.name for p in inbox.iterdir()) == ["a.txt"]
    assert (inbox / "a.txt").read_bytes().endswith(b"written after judging")
    assert not [n for n in os.listdir(store_dir) if is_work_name(n)]


def _release_batch_and_die(drop: Drop, crash_after: int) -> int:
    """The act stage's real batch release of NAMES, in this (forked) process, which dies as kill -9
    would after its `crash_after`-th file-system step of the batch."""
    from dropwarden.act.batch import batchable, release_batch
    from dropwarden.act.policy import Decision
    from dropwarden.act.stage import ActPlan, ActStage
    from dropwarden.judge.judge import Judgement
    from dropwarden.verdict import Verdict, VerdictKind
    from dropwarden.watch.settle import WorkItem
    from dropwarden_actions.moves import ReleaseAction

    die_after(crash_after, handover_steps())

    watch = arm(drop_settings(drop))
    state = State(drop.state / "state.db")
    audit = AuditLog.open(drop.audit, drop.state, AuditSettings(path=drop.audit), background=False)
    act = ActStage(state, audit, None, lambda *args: None, lambda *args: None)  # type: ignore[arg-type]
    plans = []
    for index, name in enumerate(NAMES):
        dir_fd = os.dup(watch.root_fd)
        snapshot = _snapshot(dir_fd, name)
        plans.append(
            ActPlan(
                watch,
                dir_fd,
                WorkItem("inbox", name, "test"),
                Judgement(name, Verdict(VerdictKind.CLEAN), snapshot=snapshot),
                Decision("clean", ("release",)),
                [{"op": "release", "id": f"{index + 1:032x}"}],
                name,
                None,
                1,
                {"release": ReleaseAction()},
                lambda relpath: SimpleNamespace(show=lambda: relpath),  # type: ignore[arg-type,return-value]
            )
        )
    assert all(batchable(plan) for plan in plans)
    assert release_batch(act, plans) == [True, True, True]
    audit.close()
    return 0


@pytest.mark.parametrize("crash_after", range(1, 4 * len(NAMES) + 1))
def test_a_crash_at_any_step_of_a_batch_release_loses_nothing(tmp_path: Path, crash_after: int) -> None:
    """Killed after any step of releasing three files together (copies written, originals taken, copies
    placed, originals unlinked): recovery at the next start leaves each file either in the inbox or
    released, with exactly its judged bytes, never both and never neither, and no work file."""
    drop = Drop(tmp_path)
    data = {name: f"{name}: {CLEAN}".encode() for name in NAMES}
    for name in NAMES:
        (drop.inbox / name).write_bytes(data[name])
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _release_batch_and_die(drop, crash_after)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, 99), status
    watch = arm(drop_settings(drop))
    state = State(drop.state / "state.db")
    audit = AuditLog.open(drop.audit, drop.state, AuditSettings(path=drop.audit), background=False)
    try:
        recover(state, audit, {watch.id: watch})
        assert state.pending_intents() == []
    finally:
        audit.close()
        state.close()
        watch.close()
    assert not [n for n in os.listdir(drop.quarantine) if is_work_name(n)], os.listdir(drop.quarantine)
    outbound = {p.name for p in drop.outbound.iterdir()} if drop.outbound.exists() else set()
    inbox = {p.name for p in drop.inbox.iterdir()}
    for name in NAMES:
        assert (name in inbox) != (name in outbound), (name, inbox, outbound)
        where = drop.inbox if name in inbox else drop.outbound
        assert (where / name).read_bytes() == data[name]
    if crash_after > 3 * len(NAMES):
        assert outbound == set(NAMES)


def test_files_arriving_together_are_each_released_or_quarantined_once(tmp_path: Path) -> None:
    """Forty clean files and one with a card number, waiting when the daemon starts, are judged and
    acted on in batches: every clean one leaves the inbox for the release folder with exactly its
    bytes, the other for the quarantine (alerted), each with one decision and one action."""
    drop = Drop(tmp_path)
    data = {f"f{index:03d}.txt": f"{index}: {CLEAN}".encode() for index in range(40)}
    for name, body in data.items():
        (drop.inbox / name).write_bytes(body)
    (drop.inbox / "f020b.txt").write_text(PII)
    daemon = drop.daemon().start()
    try:
        daemon.wait_for(
            lambda: len(daemon.records("action.done")) >= len(data) + 1, timeout=120, what="41 acts"
        )
        assert sorted(p.name for p in drop.outbound.iterdir()) == sorted(data)
        for name, body in data.items():
            assert (drop.outbound / name).read_bytes() == body
            assert len(daemon.decisions_for(name)) == 1
        (finding,) = daemon.decisions_for("f020b.txt")
        assert finding["outcome"] == "finding"
        done = daemon.records("action.done")
        ops = sorted(r["body"]["op"] for r in done)
        assert ops == ["quarantine"] + ["release"] * len(data)
        (sidecar,) = drop.sidecars()
        assert (drop.quarantine / sidecar["id"]).read_text() == PII
        daemon.wait_for(drop.alert_lines, what="alert")
        assert not list(drop.inbox.iterdir())
        assert not [n for n in os.listdir(drop.quarantine) if is_work_name(n)]
    finally:
        daemon.stop()
    assert drop.verify_audit().returncode == 0


@contextmanager
def in_process_pipeline(drop: Drop) -> Iterator[tuple[Any, Any, Any]]:
    """The real pipeline on `drop`'s configuration, without the daemon around it: (pipeline, its one
    watch, the runtime whose registry it judges with); all closed after the block."""
    from dropwarden.configload import load_config
    from dropwarden.pipeline import Pipeline, PipelineContext
    from dropwarden.runtime import build_runtime

    settings = load_config(drop.config).settings
    runtime = build_runtime(settings)
    watch = arm(settings.watch[0])
    state = State(drop.state / "state.db")
    audit = AuditLog.open(drop.audit, drop.state, AuditSettings(path=drop.audit), background=False)
    try:
        context = PipelineContext({watch.id: watch}, runtime.judge, "test", [])
        yield Pipeline(context, state, audit, None, lambda *args: None), watch, runtime  # type: ignore[arg-type]
    finally:
        audit.close()
        state.close()
        watch.close()
        runtime.close()


def process_together(drop: Drop, names: list[str]) -> list[str]:
    """The real pipeline given the inbox files `names` as one worker's batch; the audit log's decision
    and action.done record types, in order."""
    from dropwarden.watch.settle import WorkItem

    with in_process_pipeline(drop) as (pipeline, watch, _runtime):
        pipeline.process_batch([WorkItem(watch.id, name, "test") for name in names])
    kinds = [r["type"] for r in audit_records(drop.audit) if r["type"] in ("decision", "action.done")]
    return kinds


def test_a_batch_of_large_files_is_acted_on_before_its_bytes_pile_up(tmp_path: Path) -> None:
    """Files taken together are acted on as soon as the bytes judged and waiting reach
    `pipeline.BATCH_BYTES` (4 MiB): three 3 MB files given to one worker at once are released as two
    files, then one, so a batch never holds more than that and one file's bytes in memory."""
    from dropwarden.pipeline import BATCH_BYTES

    drop = Drop(tmp_path, extra="[ocr]\nenabled = false\n[limits]\nmax_file_size = 8000000\n")
    size = 3_000_000
    assert 2 * size >= BATCH_BYTES > size
    names = ["l1.txt", "l2.txt", "l3.txt"]
    for index, name in enumerate(names):
        (drop.inbox / name).write_bytes((f"{index} {CLEAN}" * (size // len(CLEAN) + 1)).encode()[:size])
    kinds = process_together(drop, names)
    assert kinds == ["decision", "decision", "action.done", "action.done", "decision", "action.done"]
    assert sorted(p.name for p in drop.outbound.iterdir()) == names


def test_a_batch_whose_judging_takes_long_is_acted_on_without_waiting_for_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files taken together are acted on once their judging has taken `pipeline.BATCH_SECONDS`: with
    slow detectors (OCR, a vision model) the first file of a batch does not wait for the last one. With
    the bound at 0 every file is acted on as soon as it is judged."""
    from dropwarden import pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "BATCH_SECONDS", 0.0)
    drop = Drop(tmp_path, extra="[ocr]\nenabled = false\n")
    names = ["s1.txt", "s2.txt", "s3.txt"]
    for name in names:
        (drop.inbox / name).write_text(CLEAN)
    kinds = process_together(drop, names)
    assert kinds == ["decision", "action.done"] * 3
    assert sorted(p.name for p in drop.outbound.iterdir()) == names
