"""Exactly one decision record per file, wherever the daemon is killed: a decision recorded and not yet
acted on is acted on at the next start, when the file is unchanged, instead of judged again (act.decided).

A child process runs the real pipeline and dies (os._exit, as kill -9) right after one of its steps: the
state row, the decision record, the audit fsync, the intent, each hand-over step, the outcome, the judged
index. The restart then runs what the service runs at start: recovery, a reconcile, the pipeline.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dropwarden.act.handover import is_work_name
from dropwarden.audit import AuditLog
from dropwarden.config import AuditSettings
from dropwarden.state import State

from .crash_steps import KILLED, die_after, handover_steps
from .daemon_harness import audit_records
from .test_daemon import CLEAN, PII, Drop

NAMES = ["a.txt", "b.txt", "c.txt"]
SINGLE_STEPS = 16  # more than the single-file path has: the last run completes
BATCH_STEPS = 24  # more than a three-file batch release has


class Host:
    """The parts the service assembles to judge and act on a drop, in this process: the real judge,
    state, audit log and alert outbox (not delivered)."""

    def __init__(self, drop: Drop, ruleset: str | None = None) -> None:
        from dropwarden.act.alerts import AlertDispatcher, configured_sinks, notify_actions
        from dropwarden.configload import load_config
        from dropwarden.pipeline import Pipeline, PipelineContext
        from dropwarden.runtime import build_runtime, ruleset_version
        from dropwarden.watch.activewatch import arm

        settings = load_config(drop.config).settings
        self.runtime = build_runtime(settings)
        self.ruleset = ruleset or ruleset_version(self.runtime)
        self.watch = arm(settings.watch[0])
        self.state = State(drop.state / "state.db")
        self.audit = AuditLog.open(drop.audit, drop.state, AuditSettings(path=drop.audit), background=False)
        registry = self.runtime.registry
        sinks = notify_actions(registry, lambda kind, body: self.audit.append(kind, body))
        alerts = AlertDispatcher(self.state, sinks, settings.alerts)
        context = PipelineContext(
            {self.watch.id: self.watch},
            self.runtime.judge,
            self.ruleset,
            configured_sinks(settings.alerts, registry),
        )
        self.pipeline = Pipeline(context, self.state, self.audit, alerts, lambda *args: None)

    def restart(self) -> None:
        """What the service does at start before its workers take files: recovery, then a reconcile."""
        from dropwarden.act.recovery import recover
        from dropwarden.watch.reconcile import reconcile
        from dropwarden.watch.settle import WorkItem

        recover(self.state, self.audit, {self.watch.id: self.watch})
        found: list[str] = []
        reconcile(
            self.watch, self.state, self.ruleset, lambda watch, relpath, hint, why: found.append(relpath)
        )
        self.pipeline.process_batch(
            [WorkItem(self.watch.id, relpath, "reconcile") for relpath in sorted(found)]
        )

    def close(self) -> None:
        self.audit.close()
        self.state.close()
        self.watch.close()
        self.runtime.close()


def crash_steps() -> list:
    """Every step of judging and acting after which a kill leaves something different behind."""
    from dropwarden import pipeline

    return [
        (pipeline, "remember"),
        (AuditLog, "append_many"),
        (AuditLog, "sync"),
        (State, "add_intent"),
        (State, "add_intents"),
        (State, "enqueue_alert"),
        (State, "finish_intent"),
        (State, "finish_intents"),
        (pipeline, "settle"),
        *handover_steps(),
    ]


def judge_and_die(drop: Drop, names: list[str], crash_after: int, steps: list | None = None) -> int:
    """In a forked child: judge and act on `names` together as the real pipeline does, dying right after
    step `crash_after` (of `crash_steps()` by default). The child's exit status (KILLED, or 0 when it ran
    to the end)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from dropwarden.watch.settle import WorkItem

            host = Host(drop)
            die_after(crash_after, crash_steps() if steps is None else steps)
            host.pipeline.process_batch([WorkItem(host.watch.id, name, "test") for name in names])
            host.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, KILLED), status
    return os.WEXITSTATUS(status)


def restart(drop: Drop, ruleset: str | None = None) -> None:
    host = Host(drop, ruleset)
    try:
        host.restart()
        assert host.state.pending_intents() == []
        assert host.state.query("SELECT count(*) FROM decided") == [(0,)], "every decision was acted on"
    finally:
        host.close()


def decisions(drop: Drop, name: str) -> list[dict]:
    return [r for r in audit_records(drop.audit, "decision") if r["body"]["path"].endswith("/" + name)]


def places(drop: Drop, data: bytes) -> list[str]:
    """Where the bytes `data` are: inbox, outbound, quarantine (each file once)."""
    found = []
    for where, folder in (
        ("inbox", drop.inbox),
        ("outbound", drop.outbound),
        ("quarantine", drop.quarantine),
    ):
        if folder.exists():
            found += [where for p in folder.iterdir() if p.is_file() and p.read_bytes() == data]
    return found


def assert_once_each(drop: Drop, expected: dict[str, tuple[bytes, str]]) -> None:
    """Each file (name -> (bytes, place)) in exactly its one place, with exactly one decision record; no
    work file; the audit log verifies."""
    for name, (data, place) in expected.items():
        assert places(drop, data) == [place], (name, places(drop, data))
        found = decisions(drop, name)
        assert len(found) == 1, (name, [(r["seq"], r["body"]["outcome"]) for r in found])
    assert not [n for n in os.listdir(drop.quarantine) if is_work_name(n)], os.listdir(drop.quarantine)
    verified = drop.verify_audit()
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize("op", ["release", "quarantine"])
@pytest.mark.parametrize("crash_after", range(1, SINGLE_STEPS + 1))
def test_a_kill_at_any_step_of_one_file_leaves_one_decision_record(tmp_path: Path, op: str, crash_after: int):
    """Killed after any step of judging and acting on one file (released, or quarantined and alerted):
    after the restart the file is in its one place, with one decision record, one alert at most queued,
    and the audit log verifies."""
    drop = Drop(tmp_path, extra="[ocr]\nenabled = false\n")
    data = (PII if op == "quarantine" else CLEAN).encode()
    (drop.inbox / "f.txt").write_bytes(data)
    status = judge_and_die(drop, ["f.txt"], crash_after)
    if crash_after == SINGLE_STEPS:
        assert status == 0, "SINGLE_STEPS must be past the last step"
    restart(drop)
    assert_once_each(drop, {"f.txt": (data, "outbound" if op == "release" else "quarantine")})
    if op == "quarantine":
        assert len(drop.sidecars()) == 1
        state = State(drop.state / "state.db")
        try:
            assert state.query("SELECT count(DISTINCT id) FROM outbox") == [(1,)], "one alert, queued once"
        finally:
            state.close()


@pytest.mark.parametrize("crash_after", range(1, BATCH_STEPS + 1))
def test_a_kill_at_any_step_of_a_batch_leaves_one_decision_record_per_file(tmp_path: Path, crash_after: int):
    """Three clean files judged together and released as one batch (one audit fsync for their three
    decisions), killed after any step: after the restart each is released once, with one record."""
    drop = Drop(tmp_path, extra="[ocr]\nenabled = false\n")
    data = {name: f"{name}: {CLEAN}".encode() for name in NAMES}
    for name in NAMES:
        (drop.inbox / name).write_bytes(data[name])
    status = judge_and_die(drop, NAMES, crash_after)
    if crash_after == BATCH_STEPS:
        assert status == 0, "BATCH_STEPS must be past the last step"
    restart(drop)
    assert_once_each(drop, {name: (body, "outbound") for name, body in data.items()})


def _decided_then_killed(drop: Drop, data: bytes) -> dict:
    """The file `f.txt` judged, its decision durable, the process killed before anything moved; its record."""
    (drop.inbox / "f.txt").write_bytes(data)
    assert judge_and_die(drop, ["f.txt"], 3) == KILLED  # the row, the record, the audit fsync
    (first,) = decisions(drop, "f.txt")
    return first


def test_a_file_changed_while_the_daemon_was_down_is_judged_again_and_says_what_it_supersedes(tmp_path):
    """Decided (release) and killed before the move; then the file gains a card number while no daemon
    runs. The restart must not act on the stale verdict: the new bytes are judged, quarantined, and the
    second record names the first as superseded."""
    drop = Drop(tmp_path, extra="[ocr]\nenabled = false\n")
    first = _decided_then_killed(drop, CLEAN.encode())
    assert first["body"]["outcome"] == "clean"
    with open(drop.inbox / "f.txt", "ab") as changed:
        changed.write(PII.encode())
    restart(drop)
    first_again, second = decisions(drop, "f.txt")
    assert first_again["seq"] == first["seq"]
    assert second["body"]["outcome"] == "finding"
    assert second["body"]["supersedes"] == {
        "log_id": second["body"]["supersedes"]["log_id"],
        "seq": first["seq"],
        "reason": "changed_since_decision",
    }
    assert places(drop, (CLEAN + PII).encode()) == ["quarantine"]
    assert not drop.outbound.exists() or not list(drop.outbound.iterdir()), (
        "the stale verdict was not acted on"
    )
    assert drop.verify_audit().returncode == 0


def test_a_file_replaced_by_the_same_bytes_is_judged_again(tmp_path):
    """Same bytes, another inode (the file was replaced while no daemon ran): not the file judged, so
    judged again, the second record superseding the first."""
    drop = Drop(tmp_path, extra="[ocr]\nenabled = false\n")
    first = _decided_then_killed(drop, CLEAN.encode())
    (drop.inbox / "f.new").write_bytes(CLEAN.encode())
    os.replace(drop.inbox / "f.new", drop.inbox / "f.txt")
    restart(drop)
    _, second = decisions(drop, "f.txt")
    assert second["body"]["supersedes"]["seq"] == first["seq"]
    assert second["body"]["supersedes"]["reason"] == "changed_since_decision"
    assert places(drop, CLEAN.encode()) == ["outbound"]


def test_a_new_ruleset_judges_again_what_the_old_one_decided(tmp_path):
    """Decided under one ruleset version, restarted under another: judged again, superseding."""
    drop = Drop(tmp_path, extra="[ocr]\nenabled = false\n")
    first = _decided_then_killed(drop, CLEAN.encode())
    restart(drop, ruleset="another ruleset")
    _, second = decisions(drop, "f.txt")
    assert second["body"]["supersedes"]["seq"] == first["seq"]
    assert second["body"]["supersedes"]["reason"] == "ruleset_changed"
    assert places(drop, CLEAN.encode()) == ["outbound"]


def test_the_daemon_acts_on_a_decision_its_killed_predecessor_recorded(tmp_path):
    """The real service at start: a decision recorded by a process killed before it moved anything is
    acted on (decision.resumed, then the release), and no second decision is recorded."""
    drop = Drop(tmp_path, extra="[ocr]\nenabled = false\n")
    first = _decided_then_killed(drop, CLEAN.encode())
    daemon = drop.daemon().start()
    try:
        daemon.wait_for(lambda: (drop.outbound / "f.txt").exists(), what="release")
        daemon.wait_for(lambda: daemon.records("action.done"), what="action.done")
    finally:
        daemon.stop()
    assert [r["seq"] for r in decisions(drop, "f.txt")] == [first["seq"]]
    (resumed,) = daemon.records("decision.resumed")
    assert resumed["body"]["decision_seq"] == first["seq"]
    (done,) = daemon.records("action.done")
    assert done["body"]["id"] == next(s["id"] for s in first["body"]["actions"] if s["op"] == "release")
    assert drop.verify_audit().returncode == 0


def test_a_decision_follows_its_file_put_back_under_another_name(tmp_path):
    """Killed with the original held in the store (mid-release); while no daemon runs another file takes
    its name. Recovery puts the original back under a tagged name, and its recorded decision follows it:
    it is released once on that decision, the newcomer judged on its own; one record per content."""
    from dropwarden.act.quarantine import QuarantineStore

    drop = Drop(tmp_path, extra="[ocr]\nenabled = false\n")
    (drop.inbox / "f.txt").write_bytes(CLEAN.encode())
    assert judge_and_die(drop, ["f.txt"], 1, [(QuarantineStore, "hold")]) == KILLED
    assert not (drop.inbox / "f.txt").exists()
    (drop.inbox / "f.txt").write_bytes(PII.encode())
    restart(drop)
    assert places(drop, CLEAN.encode()) == ["outbound"]
    assert places(drop, PII.encode()) == ["quarantine"]
    records = audit_records(drop.audit, "decision")
    by_content = sorted((r["body"]["sha256"], r["body"]["outcome"]) for r in records)
    assert by_content == sorted([(sha256(CLEAN), "clean"), (sha256(PII), "finding")])
    assert not any("supersedes" in r["body"] for r in records)
    assert len(audit_records(drop.audit, "decision.resumed")) == 1
    assert drop.verify_audit().returncode == 0


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
