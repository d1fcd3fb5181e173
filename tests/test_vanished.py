"""A file gone between settle and intake: nothing to judge, so nothing is recorded or acted on."""

from __future__ import annotations

import os
from pathlib import Path

from dropwarden.audit import AuditLog
from dropwarden.config import AuditSettings, Settings
from dropwarden.judge.judge import Judge, Judgement
from dropwarden.pipeline import Pipeline, PipelineContext
from dropwarden.runtime import build_runtime
from dropwarden.state import State
from dropwarden.verdict import Reason
from dropwarden.watch.activewatch import arm
from dropwarden.watch.settle import WorkItem

from .daemon_harness import audit_records


class DeletedFirst:
    """The real judge, with the file deleted the moment before intake opens it (the race made certain)."""

    def __init__(self, judge: Judge, folder: Path) -> None:
        self._judge = judge
        self._folder = folder
        self.judged: list[Judgement] = []

    def judge_name(self, dir_fd: int, name: str | bytes, display_path: str, **options: object) -> Judgement:
        os.unlink(self._folder / os.fsdecode(name))
        judgement = self._judge.judge_name(dir_fd, name, display_path, **options)  # type: ignore[arg-type]
        self.judged.append(judgement)
        return judgement


def test_a_file_that_vanishes_between_settle_and_intake_is_not_recorded(tmp_path: Path):
    inbox, quarantine, outbound = tmp_path / "inbox", tmp_path / "quarantine", tmp_path / "outbound"
    settings = Settings(
        state={"dir": str(tmp_path / "state")},
        watch=[
            {
                "path": str(inbox),
                "name": "inbox",
                "quarantine_dir": str(quarantine),
                "release_to": str(outbound),
            }
        ],
    )
    runtime = build_runtime(settings)
    watch = arm(settings.watch[0])
    state = State(tmp_path / "state" / "state.db")
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog.open(audit_path, tmp_path / "state", AuditSettings(path=audit_path), background=False)
    requeued: list[tuple] = []
    judge = DeletedFirst(runtime.judge, inbox)
    pipeline = Pipeline(
        PipelineContext({watch.id: watch}, judge, "ruleset", []),  # type: ignore[arg-type]
        state,
        audit,
        None,  # type: ignore[arg-type]
        lambda *args: requeued.append(args),
    )
    try:
        (inbox / "short-lived.txt").write_text("card 4111 1111 1111 1111\n")
        pipeline.process(WorkItem("inbox", "short-lived.txt", "event"))
    finally:
        audit.close()
        state_judged = state.judged_count()
        state.close()
        runtime.close()
    (judgement,) = judge.judged
    assert judgement.refusal is not None and judgement.refusal.reason is Reason.VANISHED
    assert audit_records(audit_path, "decision") == []
    assert state_judged == 0 and requeued == []
    assert pipeline.counters.judged == 0 and not pipeline.counters.failures
    assert not [p for p in (quarantine, outbound) if p.exists() and os.listdir(p)]
