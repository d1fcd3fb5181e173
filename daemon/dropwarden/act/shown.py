"""What the service log, STATUS and metrics show of a decision once its record is written, and the act
stage's plan for it."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import structlog

from dropwarden.act.decided import Decided
from dropwarden.act.records import true_counts
from dropwarden.act.stage import ActPlan
from dropwarden.judge.judge import Judge
from dropwarden.judge.names import JudgedName

if TYPE_CHECKING:
    from dropwarden.pipeline import Pipeline, PipelineContext

log = structlog.get_logger("dropwarden.pipeline")


def recorded(pipeline: Pipeline, ctx: PipelineContext, each: Decided) -> ActPlan:
    """After the decision record is written: what the service log, STATUS and metrics show, and the
    act stage's plan."""
    watch, judgement, decision, body = each.watch, each.judgement, each.decision, each.body
    seq, recorded = each.audit_seq, each.recorded
    assert seq is not None
    if each.released:
        pipeline.act.state_write(pipeline.state.use_operator_release, watch.id, each.relpath_bytes)
    # Clean files are the bulk: the audit log has them; the service log keeps to what needs a look.
    log_at = log.info if decision.outcome in ("finding", "unscanned") else log.debug
    log_at(
        "judged",
        watch=watch.id,
        path=body["path"],
        outcome=decision.outcome,
        types=sorted({f.type for f in recorded}),
        reason=body["reason"],
        actions=[p["op"] for p in each.planned],
        audit_seq=seq,
    )
    pipeline.count("verdicts", decision.outcome)
    pipeline.counters.recent.append(
        {
            "time": time.time(),
            "watch": watch.id,
            "path": body["path"],
            "outcome": decision.outcome,
            "types": sorted({f.type for f in recorded}),
            "reason": body["reason"],
            "audit_seq": seq,
        }
    )
    for finding_type, count in true_counts(judgement.verdict, recorded).items():
        pipeline.count("findings", finding_type, count)
    return ActPlan(
        watch,
        each.dir_fd,
        each.item,
        judgement,
        decision,
        each.planned,
        body["path"],
        body["reason"],
        seq,
        ctx.judge.registry.actions,
        lambda relpath: _name_for(ctx.judge, judgement.name, relpath),
    )


def _name_for(judge: Judge, judged: JudgedName | None, relpath: str) -> JudgedName:
    """`relpath` judged as a name: the file's own judged name when it is the same path (a release that
    kept its name, the common case), else judged now."""
    if judged is not None and judged.raw == os.fsencode(relpath):
        return judged
    return judge.judge_relative_name(relpath)[0]
