"""Releasing many clean files of one watch together: one transaction for their intents, one flush for
their copies, their outcomes in one append (the common case of a busy `release_to` watch)."""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
from typing import Any

from dropwarden.act.handover import NotTheJudgedFile, Vanished
from dropwarden.act.records import release_intent, shown_in_clear, still_same
from dropwarden.act.stage import ActPlan, ActStage
from dropwarden.judge.turn import without_turn_for_file, without_turn_if
from dropwarden.registry import MoveRequest


def batchable(plan: ActPlan) -> bool:
    """The plan only releases a judged file, with an action that moves many at once: it can go in a
    `release_batch` (the common case: a clean file on a `release_to` watch)."""
    steps = plan.steps
    if len(steps) != 1 or steps[0]["op"] != "release" or "id" not in steps[0]:
        return False
    action = plan.actions.get("release")
    return (
        plan.judgement.snapshot is not None
        and action is not None
        and action.kind == "move"
        and callable(getattr(action, "move_many", None))
    )


def release_batch(stage: ActStage, plans: list[ActPlan]) -> list[bool]:
    """`ActStage.run` for `batchable` plans of one watch, their decisions already durable (the caller
    synced the audit log): the intents in one transaction, each file re-checked, then moved together by
    the action's `move_many` (one flush), the outcomes in one append and one transaction. Per plan: True
    when its release happened (as `run`)."""
    results = [False] * len(plans)
    watch = plans[0].watch
    problem = stage.store_problem(watch)  # checked once, just before the batch moves
    if problem is not None or watch.store is None:
        problem = problem or "no quarantine directory is open"
        for plan in plans:
            stage.defer(watch, plan.steps[0]["id"], "release", problem)
        return results
    ready: list[tuple[int, str, dict[str, Any]]] = []
    for index, plan in enumerate(plans):
        op_id = plan.steps[0]["id"]
        snapshot = plan.judgement.snapshot
        assert snapshot is not None
        ready.append((index, op_id, release_intent(watch.id, plan.item.relpath, snapshot, op_id)))
    if not ready:
        return results
    try:
        stage.state.add_intents([(op_id, "release", intent) for _, op_id, intent in ready])
    except sqlite3.Error:
        for _, op_id, _ in ready:
            stage.failed_before_acting(watch, "release", op_id, "state database not writable")
        return results
    store = watch.store
    assert store is not None
    moving: list[tuple[int, MoveRequest]] = []
    for index, op_id, _ in ready:
        plan = plans[index]
        snapshot = plan.judgement.snapshot
        assert snapshot is not None
        name = plan.item.relpath.split(os.sep)[-1]
        if not still_same(plan.dir_fd, name, snapshot):
            stage.abort(watch, plan.item, op_id, "release")
            continue
        request = MoveRequest(op_id, watch, store, plan.dir_fd, name, plan.item.relpath, snapshot)
        moving.append((index, request))
    if not moving:
        return results
    action = plans[0].actions["release"]
    size = sum(len(request.snapshot.data) for _, request in moving if request.snapshot is not None)
    with without_turn_for_file(size, watch.may_stall):  # its flushes never hold it
        outcomes = action.move_many([request for _, request in moving])  # type: ignore[attr-defined]
    done: list[tuple[str, dict[str, Any]]] = []
    finished: list[str] = []
    in_clear = True
    for (index, request), outcome in zip(moving, outcomes, strict=True):
        plan, op_id = plans[index], request.op_id
        if isinstance(outcome, NotTheJudgedFile):
            stage.abort(watch, plan.item, op_id, "release")
        elif isinstance(outcome, Vanished):
            stage.abort(watch, plan.item, op_id, "release", vanished=True)
        elif isinstance(outcome, BaseException):
            failed = outcome if isinstance(outcome, OSError) else OSError(errno.EIO, type(outcome).__name__)
            stage.fail(op_id, "release", watch, failed, store)
        else:
            extra = {"to": plan.render_name(outcome).show()} if outcome is not None else {}
            done.append(("action.done", {"op": "release", "id": op_id, "watch": watch.id, **extra}))
            finished.append(op_id)
            in_clear = in_clear and shown_in_clear(plan.judgement.name, plan.item.relpath)
            results[index] = True
    if done:
        with without_turn_if(stage.audit.settings.fsync == "always"):
            stage.audit.append_many(done)
        finish = functools.partial(stage.state.finish_intents, path_in_audit_log=in_clear)
        stage.state_write(finish, finished)
        stage.count("actions", "release", len(done))
    return results
