"""The judging pipeline: a settled file → judgement → decision → audited, written-ahead actions."""

from __future__ import annotations

import dataclasses
import errno
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from dropwarden.act.alerts import AlertDispatcher
from dropwarden.act.batch import batchable, release_batch
from dropwarden.act.decided import Decided, earlier_decision, remember, resume, resumed_body, settle
from dropwarden.act.fsops import open_subdir_chain
from dropwarden.act.plan import MOVES, plan_actions
from dropwarden.act.policy import decide, operator_release, require, unrecorded
from dropwarden.act.records import identity_fields, path_fields, raised_at, unrecorded_body
from dropwarden.act.shown import recorded
from dropwarden.act.stage import ActPlan, ActStage
from dropwarden.audit import AuditError, AuditLog
from dropwarden.cluster.flow import Flight
from dropwarden.config import SinkSettings
from dropwarden.judge.intake import FileIdentity
from dropwarden.judge.judge import Content, Deferred, Judge, Judgement
from dropwarden.judge.names import JudgedName
from dropwarden.judge.turn import Turn, without_turn, without_turn_for_file, without_turn_if
from dropwarden.state import State
from dropwarden.verdict import Reason, unscanned
from dropwarden.watch.activewatch import ActiveWatch
from dropwarden.watch.settle import Hint, WorkItem

if TYPE_CHECKING:
    from dropwarden.cluster.remote import RemoteJudging

log = structlog.get_logger("dropwarden.pipeline")

# A batch is acted on once its judged snapshots hold BATCH_BYTES or its judging took BATCH_SECONDS: the
# bytes in hand and the wait of its first file stay bounded, whatever the files' sizes and detectors.
BATCH_BYTES, BATCH_SECONDS = 4 << 20, 0.05

SKIP_REASONS = frozenset({Reason.SYMLINK, Reason.NOT_REGULAR, Reason.HARD_LINKED})


@dataclass
class Counters:
    """What STATUS and metrics report; updated under the pipeline's lock."""

    verdicts: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    # the last decisions, masked as in the audit log (`dropwarden status`): watch, path, outcome, ...
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def judged(self) -> int:
        return sum(self.verdicts.values())


@dataclass
class PipelineContext:
    """What the workers need; replaced as a whole on reload so a worker never sees half a config."""

    watches: dict[str, ActiveWatch]
    judge: Judge
    ruleset: str
    sinks: list[str]
    sink_filters: dict[str, SinkSettings] = field(default_factory=dict)  # configured sinks by id
    # [cluster] role "watch": file contents are judged on judge hosts; None: here (role "all")
    remote: RemoteJudging | None = None


def _required(watch: ActiveWatch, judgement: Judgement, judge: Judge) -> Judgement:
    """The judgement with the problems of the watch's required detectors that did not judge it."""
    if not watch.settings.require:
        return judgement
    kind = judgement.file_type.kind if judgement.file_type else None
    verdict = require(watch.settings, judgement.verdict, kind, judgement.runs, judge.registry.detectors)
    return judgement if verdict is judgement.verdict else dataclasses.replace(judgement, verdict=verdict)


class Pipeline:
    def __init__(
        self,
        context: PipelineContext,
        state: State,
        audit: AuditLog,
        alerts: AlertDispatcher,
        requeue: Callable[[str, str, Hint, str], None],
    ) -> None:
        self.context = context
        self.state = state
        self.audit = audit
        self.alerts = alerts
        self._requeue = requeue
        self.counters = Counters()
        self.observe: Callable[[str, float], None] = lambda stage, seconds: None  # metrics hook
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, str], bool] = {}  # key -> "seen again while in flight"
        self.turn = Turn()
        self.act = ActStage(state, audit, alerts, requeue, self.count)

    # ------------------------------------------------------------------------------------------ entry

    def process(self, item: WorkItem) -> None:
        self.process_batch([item])

    def process_batch(self, items: list[WorkItem]) -> None:
        """Judge `items` (taken from the queue together) one by one, then act on them together: records in
        one append and one audit fsync before anything moves, a `release_to` watch's clean files released
        together (`act.batch`), all recorded as judged in one transaction. Failures are each file's own."""
        ctx = self.context
        taken = self.take_in(items)
        decided: list[Decided] = []
        held, began = 0, time.perf_counter()  # bytes judged and not yet acted on; since when
        try:
            with self.turn.held():  # one worker at a time, but not while it waits (`dropwarden.judge.turn`)
                for index, item in enumerate(taken):
                    decided += self.judged(item, ctx)
                    if decided and decided[-1].item is item and decided[-1].judgement.snapshot is not None:
                        held += len(decided[-1].judgement.snapshot.data)
                    due = held >= BATCH_BYTES or time.perf_counter() - began >= BATCH_SECONDS
                    if decided and (due or index == len(taken) - 1):
                        self.act_on(ctx, decided)
                        decided, held, began = [], 0, time.perf_counter()
        finally:
            for each in decided:
                os.close(each.dir_fd)
            self.let_go(taken)

    def take_in(self, items: list[WorkItem]) -> list[WorkItem]:
        """The items no worker has in hand; one that is is marked to be judged again once let go."""
        taken: list[WorkItem] = []
        with self._lock:
            for item in items:
                key = (item.watch, item.relpath)
                if key in self._inflight:
                    self._inflight[key] = True
                    continue
                self._inflight[key] = False
                taken.append(item)
        return taken

    def let_go(self, items: list[WorkItem]) -> None:
        """`items` are done with; those seen again meanwhile are judged again."""
        again = []
        with self._lock:
            for item in items:
                if self._inflight.pop((item.watch, item.relpath), False):
                    again.append(item)
        for item in again:
            self._requeue(item.watch, item.relpath, Hint.STAT, "in-flight")

    def judged(
        self, item: WorkItem, ctx: PipelineContext, flights: list[Flight] | None = None
    ) -> list[Decided]:
        """`_process` one file: its decision, if any, to act on; its failure its own. With `flights`, a
        file whose content is judged elsewhere is added there instead, to be `finish`ed."""
        decided: list[Decided] = []
        try:
            self._process(item, ctx, decided, flights)
        except Exception as exc:
            self._failed(item.watch, exc)
        return decided

    def finish(self, flight: Flight, content: Content | Exception) -> list[Decided]:
        """A file whose content was judged elsewhere: its decision, as `_judged` would have made it."""
        ctx, watch, item, deferred = flight.ctx, flight.watch, flight.item, flight.deferred
        try:
            try:
                if isinstance(content, Exception):
                    raise content
                judgement = ctx.judge.conclude(deferred.snapshot, content, deferred.name, deferred.name_runs)
                judgement = _required(watch, judgement, ctx.judge)
            except Exception as exc:  # MemoryError included: the file is then unscanned, never clean
                judgement = self._judging_failed(watch, item, flight.display, exc)
            decision = self._conclude(
                ctx, watch, flight.dir_fd, item, judgement, flight.started, flight.supersedes
            )
        except Exception as exc:
            os.close(flight.dir_fd)
            self._failed(item.watch, exc)
            return []
        if decision is None:
            os.close(flight.dir_fd)
            return []
        return [decision]

    def act_on(self, ctx: PipelineContext, decided: list[Decided]) -> None:
        """`_act_all`, a failure of it the failure of each of its files; their folders' fds closed."""
        try:
            self._act_all(ctx, decided)
        except Exception as exc:
            for each in decided:
                self._failed(each.watch.id, exc)
        finally:
            while decided:
                os.close(decided.pop().dir_fd)

    def _failed(self, watch: str, exc: Exception) -> None:
        self.count("failures", type(exc).__name__)
        # The message could name the file (an OSError's filename) or quote its bytes: the type,
        # errno and where it was raised are what the operator needs, and none of them is data.
        log.error(
            "pipeline error",
            watch=watch,
            error=type(exc).__name__,
            errno=errno.errorcode.get(getattr(exc, "errno", None) or 0),
            where=raised_at(exc),
        )

    def _process(
        self, item: WorkItem, ctx: PipelineContext, decided: list[Decided], flights: list[Flight] | None
    ) -> None:
        """Judge one file; a decision to record and act on is added to `decided` (which then owns the
        folder's fd), or a file whose content is judged elsewhere to `flights` (which then owns it)."""
        watch = ctx.watches.get(item.watch)
        if watch is None:
            return  # the watch was removed by a reload
        parts = item.relpath.split(os.sep)
        try:
            dir_fd = open_subdir_chain(watch.root_fd, parts[:-1])
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                name = ctx.judge.judge_relative_name(item.relpath)[0]
                self._audit_skip(
                    watch, item.relpath, Reason.SYMLINK, "a directory on its path is a symlink", None, name
                )
            return
        handed = False
        try:
            name = parts[-1]
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return  # moved away or deleted before we got to it
            identity = FileIdentity.of(st)
            if self.state.judged_verdict(identity, ctx.ruleset) is not None:
                return  # this exact version was judged already
            if item.settled_at:
                self.observe("queue", max(0.0, time.monotonic() - item.settled_at))
            started = time.perf_counter()
            display = watch.display(item.relpath)
            earlier = earlier_decision(self.state, watch.id, os.fsencode(item.relpath))
            supersedes = None  # the earlier decision, when it is no longer true
            if earlier is not None:  # decided before a restart, not acted on: act on it if still true
                with without_turn_for_file(st.st_size, watch.may_stall):  # it reads and hashes the file again
                    again = resume(earlier, ctx.judge, ctx.ruleset, watch, dir_fd, item, display, st)
                if isinstance(again, Decided):
                    decided.append(again)
                    handed = True
                    return
                supersedes = again
            try:
                content = None  # judged here; on judge hosts in a cluster's watch role:
                if ctx.remote is not None:
                    content = ctx.remote.content_for(ctx.judge, watch.id, item.relpath, ctx.ruleset)
                with without_turn_for_file(st.st_size, watch.may_stall):
                    options = {"require_single_link": True, "relative": item.relpath, "content": content}
                    judgement = ctx.judge.judge_name(dir_fd, name, display, **options)
                if isinstance(judgement, Deferred):
                    assert flights is not None, "a file judged elsewhere needs a worker that waits for none"
                    flights.append(Flight(ctx, watch, dir_fd, item, display, started, supersedes, judgement))
                    handed = True
                    return
                judgement = _required(watch, judgement, ctx.judge)
            except Exception as exc:  # MemoryError included: the file is then unscanned, never clean
                judgement = self._judging_failed(watch, item, display, exc)
            decision = self._conclude(ctx, watch, dir_fd, item, judgement, started, supersedes)
            if decision is not None:
                decided.append(decision)
                handed = True
        finally:
            if not handed:
                os.close(dir_fd)

    def _judging_failed(self, watch: ActiveWatch, item: WorkItem, display: str, exc: Exception) -> Judgement:
        shown = path_fields(watch, item.relpath, None)["path"]  # name not judged: masked
        log.error("judging failed", watch=watch.id, path=shown, error=type(exc).__name__)
        return Judgement(display, unscanned(Reason.DETECTOR_ERROR, type(exc).__name__, "pipeline"))

    def _conclude(
        self,
        ctx: PipelineContext,
        watch: ActiveWatch,
        dir_fd: int,
        item: WorkItem,
        judgement: Judgement,
        started: float,
        supersedes: dict[str, Any] | None,
    ) -> Decided | None:
        self.observe("judge", time.perf_counter() - started)
        decision = self._decide(ctx, watch, dir_fd, item, judgement, started)
        if decision is not None and supersedes is not None:
            # the earlier decision, no longer true; its row goes once this one is acted on
            decision.body["supersedes"], decision.row = supersedes, True
        return decision

    # ------------------------------------------------------------------------------------------ decide

    def _decide(
        self,
        ctx: PipelineContext,
        watch: ActiveWatch,
        dir_fd: int,
        item: WorkItem,
        judgement: Judgement,
        started: float,
    ) -> Decided | None:
        """The decision on a judged file and its record's body (not yet appended); None when there is
        nothing to decide (skipped, changed while read: requeued, vanished)."""
        refusal = judgement.refusal
        if refusal is not None and refusal.reason in SKIP_REASONS:
            self._audit_skip(
                watch, item.relpath, refusal.reason, refusal.detail, refusal.identity, judgement.name
            )
            if refusal.identity is not None:
                self.state.record_judged(refusal.identity, None, "skipped", ctx.ruleset, watch.id)
            return None
        if refusal is not None and refusal.reason is Reason.CHANGED:
            self._requeue(watch.id, item.relpath, Hint.STAT, "changed-while-reading")
            return None
        if refusal is not None and refusal.reason is Reason.VANISHED:
            return None

        snapshot = judgement.snapshot
        verdict = judgement.verdict
        relpath_bytes = os.fsencode(item.relpath)
        released = None
        decided = Decided(watch, dir_fd, item, judgement, started, relpath_bytes)
        try:
            decision = decide(watch.settings, verdict)
            released = self.state.pending_operator_release(watch.id, relpath_bytes)
            released_from = None
            acts = decision.outcome in ("finding", "unscanned")
            # Only judged content is released by an operator: a file never read (no sha256) is judged,
            # and acted on, like any other.
            if (
                released is not None
                and released.sha256 is not None
                and released.sha256 == judgement.sha256
                and acts
            ):
                decision = operator_release(watch.settings, decision, have_bytes=snapshot is not None)
                released_from = released.item_id
            elif judgement.sha256 is not None and acts:
                released_from = self.state.earlier_release_of(judgement.sha256)  # noted, not exempted
            planned = plan_actions(
                self.act.store_problem, ctx.sinks, ctx.sink_filters, watch, decision, snapshot is not None
            )
            decided.body = {
                "watch": watch.id,
                **path_fields(watch, item.relpath, judgement.name),
                "origin": item.origin,
                "identity": identity_fields(
                    snapshot.identity if snapshot else (refusal.identity if refusal else None)
                ),
                "sha256": judgement.sha256,
                "file_type": judgement.file_type.name if judgement.file_type else None,
                "verdict": verdict.kind.value,
                "outcome": decision.outcome,
                "reason": verdict.reason,
                "findings": [f.to_dict() for f in verdict.findings],
                "counts": verdict.counts_dicts(),
                "detectors": [run.to_dict() for run in judgement.runs],
                "actions": planned,
                **({"operator_released_from": released_from} if released_from else {}),
                "ms": round((time.perf_counter() - started) * 1000, 3),
            }
            decided.decision, decided.planned, decided.recorded = decision, planned, verdict.findings
        except Exception as exc:
            self._unrecordable(ctx, decided, exc)
        decided.released = released is not None
        return decided

    def _unrecordable(self, ctx: PipelineContext, decided: Decided, exc: Exception) -> None:
        """Building or writing the record failed (MemoryError included): the file was not judged as far
        as anyone can prove, so it is unscanned, and the policy acts on that. The exception's type is
        recorded, never its message (it could hold data from the file)."""
        watch, item, judgement = decided.watch, decided.item, decided.judgement
        log.error(
            "decision not recordable",
            watch=watch.id,
            path=path_fields(watch, item.relpath, judgement.name)["path"],
            error=type(exc).__name__,
        )
        decided.decision = unrecorded(watch.settings)
        have_bytes = judgement.snapshot is not None
        decided.planned = plan_actions(
            self.act.store_problem, ctx.sinks, ctx.sink_filters, watch, decided.decision, have_bytes
        )
        decided.body = unrecorded_body(watch, item, judgement, decided.planned, exc, decided.started)
        decided.recorded = ()

    def _record_all(self, ctx: PipelineContext, decided: list[Decided]) -> list[Decided]:
        """Append the decision records, with one write, each after its row (`act.decided`); returns those
        in the log, and those resumed (recorded before a restart). A record that cannot be written alone
        is replaced by its unrecorded form (as unscanned); if that cannot be written either, the file is
        judged again. AuditError: the log is unusable, nothing moves; judged again once it reopens."""
        if resumed := [("decision.resumed", resumed_body(e)) for e in decided if e.resumed]:
            self.audit.append_many(resumed)
        kept = {id(each) for each in self._record(ctx, [e for e in decided if not e.resumed])}
        return [each for each in decided if each.resumed or id(each) in kept]

    def _record(self, ctx: PipelineContext, decided: list[Decided]) -> list[Decided]:
        if not decided:
            return []
        self.act.state_write(remember, self.state, self.audit, ctx.ruleset, decided)
        try:
            with without_turn_if(self.audit.settings.fsync == "always"):  # each append is flushed then
                records = self.audit.append_many([("decision", each.body) for each in decided])
        except AuditError:
            raise
        except Exception:  # one body the log refuses (not JSON): each record on its own
            kept = []
            for each in decided:
                try:
                    try:
                        each.audit_seq = self.audit.append("decision", each.body).seq
                    except AuditError:
                        raise
                    except Exception as exc:
                        self._unrecordable(ctx, each, exc)
                        self.act.state_write(remember, self.state, self.audit, ctx.ruleset, [each])
                        each.audit_seq = self.audit.append("decision", each.body).seq
                except AuditError:
                    raise
                except Exception as exc:
                    self._failed(each.watch.id, exc)
                    continue
                kept.append(each)
            return kept
        for each, record in zip(decided, records, strict=True):
            each.audit_seq = record.seq
        return decided

    def _act_all(self, ctx: PipelineContext, decided: list[Decided]) -> None:
        """Record the decisions, then act: the moves of all of them after one audit fsync."""
        plans: list[tuple[Decided, ActPlan]] = []
        for each in self._record_all(ctx, decided):
            plans.append((each, recorded(self, ctx, each)))
        if any(s["op"] in MOVES and "id" in s for _, plan in plans for s in plan.steps):
            with without_turn():
                self.audit.sync()  # the decisions are the write-ahead intents: durable before anything moves
        complete: dict[int, bool] = {}
        batches: dict[str, list[int]] = {}
        for index, (each, plan) in enumerate(plans):
            if len(plans) > 1 and batchable(plan):
                batches.setdefault(plan.watch.id, []).append(index)
                continue
            try:
                with without_turn_if(any("id" in step for step in plan.steps)):  # a move flushes
                    complete[index] = self.act.run(plan)
            except Exception as exc:
                self._failed(each.watch.id, exc)
        for indexes in batches.values():
            try:
                outcomes = release_batch(self.act, [plans[index][1] for index in indexes])
            except Exception as exc:
                self._failed(plans[indexes[0]][0].watch.id, exc)
                continue
            complete.update(zip(indexes, outcomes, strict=True))
        # Only a file whose every action happened counts as judged; anything deferred, aborted or failed
        # is judged again (reconcile finds it), and is never released meanwhile.
        rows = []
        for index, (each, _) in enumerate(plans):
            judgement = each.judgement
            snapshot, refusal = judgement.snapshot, judgement.refusal
            identity = snapshot.identity if snapshot else (refusal.identity if refusal else None)
            if complete.get(index) and identity is not None:
                rows.append((identity, judgement.sha256, each.decision.outcome, ctx.ruleset, each.watch.id))
        self.act.state_write(settle, self.state, rows, decided)
        for each, _ in plans:
            self.observe("act", time.perf_counter() - each.judged_at)

    def reconfigure(self, context: PipelineContext) -> None:
        """Judge and act under `context` (a configuration's watches, judge, ruleset and sinks) for every
        file taken from now on; a worker finishes the file in hand under the context it began with.
        Called by the service on reload, and by the watch keeper as a watch is lost or re-armed."""
        self.context = context

    def use_audit(self, audit: AuditLog) -> None:
        """Append to `audit` from now on: the service reopened the log (a write failure, a rotation)."""
        self.audit = audit
        self.act.audit = audit  # the act stage appends its intents and outcomes there too

    def _audit_skip(
        self,
        watch: ActiveWatch,
        relpath: str,
        reason: Reason,
        detail: str,
        identity: FileIdentity | None,
        name: JudgedName | None,
    ) -> None:
        self.audit.append(
            "skipped",
            {
                "watch": watch.id,
                **path_fields(watch, relpath, name),
                "reason": reason.value,
                "detail": detail,
                "identity": identity_fields(identity),
            },
        )
        self.count("verdicts", "skipped")

    def count(self, table: str, key: str, by: int = 1) -> None:
        with self._lock:
            getattr(self.counters, table)[key] += by

    def maintain(self) -> tuple[dict[str, str], str | None]:
        """Once a tick: see `ActStage.maintain` (quarantine directories, the state database)."""
        return self.act.maintain(self.context.watches.values())
