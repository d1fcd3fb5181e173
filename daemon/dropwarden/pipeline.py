"""The judging pipeline: a settled file → judgement → decision → audited, written-ahead actions."""

from __future__ import annotations

import base64
import dataclasses
import errno
import os
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from dropwarden.act.alerts import AlertDispatcher, filter_sinks
from dropwarden.act.fsops import open_subdir_chain
from dropwarden.act.policy import Decision, decide, operator_release, require, unrecorded
from dropwarden.act.stage import MOVES, ActPlan, ActStage, identity_fields, record_error
from dropwarden.audit import AuditError, AuditLog
from dropwarden.config import SinkSettings
from dropwarden.findings import Finding
from dropwarden.judge.intake import FileIdentity
from dropwarden.judge.judge import Judge, Judgement
from dropwarden.judge.names import JudgedName, redact_path
from dropwarden.state import State
from dropwarden.verdict import Reason, Verdict, unscanned
from dropwarden.watch.activewatch import ActiveWatch
from dropwarden.watch.settle import Hint, WorkItem

if TYPE_CHECKING:
    from dropwarden.cluster.remote import RemoteJudging

log = structlog.get_logger("dropwarden.pipeline")

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


def path_fields(watch: ActiveWatch, relpath: str, name: JudgedName | None) -> dict[str, Any]:
    """The file's path for records, logs and alerts: readable text, plus its bytes when they are not
    UTF-8. Both show the name (`relpath`, judged as view "name") with each span a rule matched masked;
    without a judged `name` all of `relpath` is masked. Only the quarantine sidecar keeps it exact."""
    shown, shown_bytes = redact_path(watch.tree.root, relpath, name)
    fields: dict[str, Any] = {"path": shown}
    try:
        os.fsencode(os.path.join(watch.tree.root, relpath)).decode("utf-8")
    except UnicodeDecodeError:
        fields["path_b64"] = base64.b64encode(shown_bytes).decode()
    return fields


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
        self.act = ActStage(state, audit, alerts, requeue, self._count)

    # ------------------------------------------------------------------------------------------ entry

    def process(self, item: WorkItem) -> None:
        key = (item.watch, item.relpath)
        with self._lock:
            if key in self._inflight:
                self._inflight[key] = True
                return
            self._inflight[key] = False
        try:
            self._process(item, self.context)
        except Exception as exc:
            self._count("failures", type(exc).__name__)
            # The message could name the file (an OSError's filename) or quote its bytes: the type,
            # errno and where it was raised are what the operator needs, and none of them is data.
            log.error(
                "pipeline error",
                watch=item.watch,
                error=type(exc).__name__,
                errno=errno.errorcode.get(getattr(exc, "errno", None) or 0),
                where=_raised_at(exc),
            )
        finally:
            with self._lock:
                again = self._inflight.pop(key, False)
            if again:
                self._requeue(item.watch, item.relpath, Hint.STAT, "in-flight")

    def _process(self, item: WorkItem, ctx: PipelineContext) -> None:
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
            try:
                remote = ctx.remote
                content = (
                    remote.content_for(ctx.judge, watch.id, item.relpath, ctx.ruleset) if remote else None
                )
                judgement = ctx.judge.judge_name(
                    dir_fd, name, display, require_single_link=True, relative=item.relpath, content=content
                )
                judgement = _required(watch, judgement, ctx.judge)
            except Exception as exc:  # MemoryError included: the file is then unscanned, never clean
                shown = path_fields(watch, item.relpath, None)["path"]  # name not judged: masked
                log.error("judging failed", watch=watch.id, path=shown, error=type(exc).__name__)
                judgement = Judgement(
                    display, unscanned(Reason.DETECTOR_ERROR, type(exc).__name__, "pipeline")
                )
            judged = time.perf_counter()
            self.observe("judge", judged - started)
            self._conclude(ctx, watch, dir_fd, item, judgement, started)
            self.observe("act", time.perf_counter() - judged)
        finally:
            os.close(dir_fd)

    # ------------------------------------------------------------------------------------------ decide

    def _conclude(
        self,
        ctx: PipelineContext,
        watch: ActiveWatch,
        dir_fd: int,
        item: WorkItem,
        judgement: Judgement,
        started: float,
    ) -> None:
        refusal = judgement.refusal
        if refusal is not None and refusal.reason in SKIP_REASONS:
            self._audit_skip(
                watch, item.relpath, refusal.reason, refusal.detail, refusal.identity, judgement.name
            )
            if refusal.identity is not None:
                self.state.record_judged(refusal.identity, None, "skipped", ctx.ruleset, watch.id)
            return
        if refusal is not None and refusal.reason is Reason.CHANGED:
            self._requeue(watch.id, item.relpath, Hint.STAT, "changed-while-reading")
            return
        if refusal is not None and refusal.reason is Reason.VANISHED:
            return

        snapshot = judgement.snapshot
        verdict = judgement.verdict
        relpath_bytes = os.fsencode(item.relpath)
        released = None
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
            planned = self._plan(ctx, watch, decision, snapshot is not None)
            body = {
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
            record = self.audit.append("decision", body)
            recorded = verdict.findings
        except AuditError:
            raise  # the log itself is unusable: nothing moves; the file is judged again once it reopens
        except Exception as exc:
            # Building or writing the record failed (MemoryError included): the file was not judged as
            # far as anyone can prove, so it is unscanned, and the policy acts on that. The exception's
            # type is recorded, never its message (it could hold data from the file).
            log.error(
                "decision not recordable",
                watch=watch.id,
                path=path_fields(watch, item.relpath, judgement.name)["path"],
                error=type(exc).__name__,
            )
            decision = unrecorded(watch.settings)
            planned = self._plan(ctx, watch, decision, snapshot is not None)
            body = self._unrecorded_body(watch, item, judgement, planned, exc, started)
            record = self.audit.append("decision", body)  # if this fails too, nothing moves; judged again
            recorded = ()
        if released is not None:
            self.act.state_write(self.state.use_operator_release, watch.id, relpath_bytes)
        # Clean files are the bulk: the audit log has them; the service log keeps to what needs a look.
        log_at = log.info if decision.outcome in ("finding", "unscanned") else log.debug
        log_at(
            "judged",
            watch=watch.id,
            path=body["path"],
            outcome=decision.outcome,
            types=sorted({f.type for f in recorded}),
            reason=body["reason"],
            actions=[p["op"] for p in planned],
            audit_seq=record.seq,
        )
        self._count("verdicts", decision.outcome)
        self.counters.recent.append(
            {
                "time": time.time(),
                "watch": watch.id,
                "path": body["path"],
                "outcome": decision.outcome,
                "types": sorted({f.type for f in recorded}),
                "reason": body["reason"],
                "audit_seq": record.seq,
            }
        )
        for finding_type, count in _true_counts(verdict, recorded).items():
            self._count("findings", finding_type, count)

        plan = ActPlan(
            watch,
            dir_fd,
            item,
            judgement,
            decision,
            planned,
            body["path"],
            body["reason"],
            record.seq,
            ctx.judge.registry.actions,
            lambda relpath: _name_for(ctx.judge, judgement.name, relpath),
        )
        complete = self.act.run(plan)
        # Only a file whose every action happened counts as judged; anything deferred, aborted or failed
        # is judged again (reconcile finds it), and is never released meanwhile.
        identity = snapshot.identity if snapshot else (refusal.identity if refusal else None)
        if complete and identity is not None:
            self.act.state_write(
                self.state.record_judged, identity, judgement.sha256, decision.outcome, ctx.ruleset, watch.id
            )

    def _plan(
        self, ctx: PipelineContext, watch: ActiveWatch, decision: Decision, have_bytes: bool
    ) -> list[dict[str, Any]]:
        """The actions the decision record announces: an id for each, or why it is deferred."""
        planned: list[dict[str, Any]] = []
        moves = "quarantine" in decision.actions or ("release" in decision.actions and have_bytes)
        problem = self.act.store_problem(watch) if moves else None
        if "quarantine" in decision.actions:
            if problem is not None:
                planned.append({"op": "quarantine", "deferred": problem})
            elif have_bytes:
                planned.append({"op": "quarantine", "id": uuid.uuid4().hex})
            else:
                planned.append({"op": "quarantine", "id": uuid.uuid4().hex, "unread": True})
        if "release" in decision.actions and have_bytes:
            if problem is not None:
                planned.append({"op": "release", "deferred": problem})
            else:
                planned.append({"op": "release", "id": uuid.uuid4().hex})
        sinks, filtered = filter_sinks(
            notify_targets(decision.actions, ctx.sinks), ctx.sink_filters, watch.id, decision.acting_findings
        )
        if sinks:
            planned.append({"op": "alert", "id": uuid.uuid4().hex, "sinks": sinks})
        if filtered:  # the record says which sinks' filters left this alert out
            planned.append({"op": "alert.filtered", "sinks": filtered})
        return planned

    def _unrecorded_body(
        self,
        watch: ActiveWatch,
        item: WorkItem,
        judgement: Judgement,
        planned: list[dict[str, Any]],
        exc: BaseException,
        started: float,
    ) -> dict[str, Any]:
        """The smallest decision record: what file, unscanned, and which exception type stopped the
        full one (no findings, no detector runs: those are what could not be recorded)."""
        snapshot, refusal = judgement.snapshot, judgement.refusal
        return {
            "watch": watch.id,
            **path_fields(watch, item.relpath, judgement.name),
            "origin": item.origin,
            "identity": identity_fields(
                snapshot.identity if snapshot else (refusal.identity if refusal else None)
            ),
            "sha256": judgement.sha256,
            "file_type": judgement.file_type.name if judgement.file_type else None,
            "verdict": "unscanned",
            "outcome": "unscanned",
            "reason": record_error(exc),
            "findings": [],
            "detectors": [],
            "actions": planned,
            "ms": round((time.perf_counter() - started) * 1000, 3),
        }

    def reconfigure(self, context: PipelineContext) -> None:
        """Judge and act under `context` (a configuration's watches, judge, ruleset and sinks) for every
        file taken from now on; a worker finishes the file in hand under the context it began with.
        Called by the service on reload, and by the watch keeper as a watch is lost or re-armed."""
        self.context = context

    def use_audit(self, audit: AuditLog) -> None:
        """Append to `audit` from now on: the service reopened the log (after a write failure, or in a
        new file after rotation)."""
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
        self._count("verdicts", "skipped")

    def _count(self, table: str, key: str, by: int = 1) -> None:
        with self._lock:
            getattr(self.counters, table)[key] += by

    def maintain(self) -> tuple[dict[str, str], str | None]:
        """Once a tick: see `ActStage.maintain` (quarantine directories, the state database)."""
        return self.act.maintain(self.context.watches.values())


def _name_for(judge: Judge, judged: JudgedName | None, relpath: str) -> JudgedName:
    """`relpath` judged as a name: the file's own judged name when it is the same path (a release that
    kept its name, the common case), else judged now."""
    if judged is not None and judged.raw == os.fsencode(relpath):
        return judged
    return judge.judge_relative_name(relpath)[0]


def notify_targets(actions: tuple[str, ...], sinks: list[str]) -> list[str]:
    """The notify actions an alert goes to: every configured alert sink for "alert", and each other
    action a watch names that is not a move (a plugin's notify action, an alert sink by id)."""
    targets = list(sinks) if "alert" in actions else []
    targets += [name for name in actions if name not in ("alert", "leave", *MOVES) and name not in targets]
    return targets


def _true_counts(verdict: Verdict, recorded: tuple[Finding, ...]) -> Counter[str]:
    """Findings per type as made, not only as kept within the caps; none when nothing was recorded."""
    if not recorded:
        return Counter()
    if verdict.counts:
        return Counter({c.type: c.count for c in verdict.counts})
    return Counter(f.type for f in recorded)


def _raised_at(exc: BaseException) -> list[str]:
    """The frames an exception passed through, as `module:function:line`: a traceback without the message."""
    return [
        f"{os.path.basename(frame.filename)}:{frame.name}:{frame.lineno}"
        for frame in traceback.extract_tb(exc.__traceback__)
    ][-8:]
