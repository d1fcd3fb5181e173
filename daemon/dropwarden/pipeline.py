"""The judging pipeline: a settled file → judgement → decision → audited, written-ahead actions."""

from __future__ import annotations

import base64
import dataclasses
import errno
import os
import sqlite3
import stat
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from dropwarden.activewatch import ActiveWatch
from dropwarden.alerts import AlertDispatcher, alert_payload
from dropwarden.audit import AuditError, AuditLog
from dropwarden.findings import Finding
from dropwarden.fsops import make_subdir_chain, open_subdir_chain
from dropwarden.handover import (
    NotTheJudgedFile,
    Vanished,
    copy_name,
    hand_over_copy,
    hand_over_unread,
    hold_name,
    tag_of,
)
from dropwarden.intake import FileIdentity, Snapshot
from dropwarden.judge import Judge, Judgement
from dropwarden.names import JudgedName, redact_path
from dropwarden.policy import Decision, decide, operator_release, require, unrecorded
from dropwarden.quarantine import QuarantineError, QuarantineStore, sidecar_for, sidecar_for_unread
from dropwarden.settle import Hint, WorkItem
from dropwarden.state import State
from dropwarden.verdict import Reason, Verdict, unscanned

log = structlog.get_logger("dropwarden.pipeline")

SKIP_REASONS = frozenset({Reason.SYMLINK, Reason.NOT_REGULAR, Reason.HARD_LINKED})


@dataclass
class Counters:
    """What STATUS and metrics report; updated under the pipeline's lock."""

    verdicts: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)

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


def identity_fields(identity: FileIdentity | None) -> dict[str, int] | None:
    if identity is None:
        return None
    return {
        "dev": identity.dev,
        "ino": identity.ino,
        "size": identity.size,
        "mtime_ns": identity.mtime_ns,
        "ctime_ns": identity.ctime_ns,
    }


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
        self._store_trouble: dict[str, str] = {}  # watch id -> why its quarantine store is unusable
        self._state_trouble = False

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
                judgement = ctx.judge.judge_name(
                    dir_fd, name, display, require_single_link=True, relative=item.relpath
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
            self._state_write(self.state.use_operator_release, watch.id, relpath_bytes)
        acting = [p for p in planned if p["op"] in ("quarantine", "release") and "id" in p]
        if acting:
            self.audit.sync()  # the decision is the write-ahead intent: durable before anything moves
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
        for finding_type, count in _true_counts(verdict, recorded).items():
            self._count("findings", finding_type, count)

        alert_id = next((p["id"] for p in planned if p["op"] == "alert"), None)
        if alert_id is not None:

            def build(findings: tuple[Any, ...], reason: str | None) -> dict[str, Any]:
                return alert_payload(
                    alert_id=alert_id,
                    watch=watch.id,
                    path=body["path"],
                    sha256=judgement.sha256,
                    size=snapshot.identity.size if snapshot else None,
                    outcome=decision.outcome,
                    reason=reason,
                    findings=findings,
                    actions=decision.actions,
                    audit_seq=record.seq,
                    audit_head=self.audit.durable_head(),
                    counts=verdict.counts_dicts() if findings else [],
                )

            try:
                payload = build(decision.acting_findings, body["reason"])
            except Exception as exc:  # the alert still goes out, without what could not be rendered
                payload = build((), _record_error(exc))
            try:
                self.state.enqueue_alert(alert_id, ctx.sinks, payload)
            except sqlite3.Error:
                self._failed_before_acting(watch, "alert", alert_id, "state database not writable")
                raise  # nothing moves, nothing is recorded as judged: judged (and alerted) again
            self.alerts.kick()
            self._count("actions", "alert")

        complete = len(acting) == len([p for p in planned if p["op"] in ("quarantine", "release")])
        for step in acting:
            if step["op"] == "quarantine" and snapshot is not None:
                done = self._quarantine(watch, dir_fd, item, snapshot, step["id"], decision, record.seq)
            elif step["op"] == "quarantine":
                done = self._quarantine_unread(watch, dir_fd, item, judgement, step["id"], body, record.seq)
            else:
                assert snapshot is not None
                done = self._release(watch, dir_fd, item, snapshot, step["id"])
            complete = complete and done

        # Only a file whose every action happened counts as judged; anything deferred, aborted or failed
        # is judged again (reconcile finds it), and is never released meanwhile.
        identity = snapshot.identity if snapshot else (refusal.identity if refusal else None)
        if complete and identity is not None:
            self._state_write(
                self.state.record_judged, identity, judgement.sha256, decision.outcome, ctx.ruleset, watch.id
            )

    def _plan(
        self, ctx: PipelineContext, watch: ActiveWatch, decision: Decision, have_bytes: bool
    ) -> list[dict[str, Any]]:
        """The actions the decision record announces: an id for each, or why it is deferred."""
        planned: list[dict[str, Any]] = []
        moves = "quarantine" in decision.actions or ("release" in decision.actions and have_bytes)
        problem = self._store_problem(watch) if moves else None
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
        if "alert" in decision.actions and ctx.sinks:
            planned.append({"op": "alert", "id": uuid.uuid4().hex, "sinks": ctx.sinks})
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
            "reason": _record_error(exc),
            "findings": [],
            "detectors": [],
            "actions": planned,
            "ms": round((time.perf_counter() - started) * 1000, 3),
        }

    # ------------------------------------------------------------------------------------------ act

    def _still_same(self, dir_fd: int, name: str, snapshot: Snapshot) -> bool:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return False
        return FileIdentity.of(st) == snapshot.identity

    def _quarantine(
        self,
        watch: ActiveWatch,
        dir_fd: int,
        item: WorkItem,
        snapshot: Snapshot,
        item_id: str,
        decision: Decision,
        audit_seq: int,
    ) -> bool:
        store = self._usable_store(watch, item_id, "quarantine")
        if store is None:
            return False
        name = item.relpath.split(os.sep)[-1]
        try:
            findings = [f.to_dict() for f in decision.acting_findings]
        except Exception as exc:  # the item is kept all the same; its findings are in the audit log
            findings = [{"error": _record_error(exc)}]
        sidecar = sidecar_for(
            snapshot,
            item_id=item_id,
            watch_id=watch.id,
            watch_root=watch.settings.path,
            relative_path=os.fsencode(item.relpath),
            verdict=decision.outcome,
            reason=None,
            findings=findings,
            audit_seq=audit_seq,
        )
        intent = {
            "op": "quarantine",
            "watch": watch.id,
            "relpath_b64": _b64(item.relpath),
            "item_id": item_id,
            "identity": identity_fields(snapshot.identity),
            "sha256": snapshot.sha256,
            "copy": copy_name(item_id),
            "hold": hold_name(item_id),
            "sidecar": sidecar,
        }
        if not self._intend(watch, item_id, "quarantine", intent):
            return False
        if not self._still_same(dir_fd, name, snapshot):
            self._abort(watch, item, item_id, "quarantine")
            return False
        try:
            hand_over_copy(
                store,
                dir_fd,
                name,
                item_id,
                snapshot,
                dst_dir_fd=store.fd,
                dst_name=item_id,
                clash_tag=None,
                private=True,
            )
        except NotTheJudgedFile:
            self._abort(watch, item, item_id, "quarantine")
            return False
        except Vanished:
            self._abort(watch, item, item_id, "quarantine", vanished=True)
            return False
        except OSError as exc:
            self._fail(item_id, "quarantine", watch, exc, store)
            return False
        store.write_sidecar(item_id, sidecar)
        self._done(watch, item_id, "quarantine", {})
        return True

    def _quarantine_unread(
        self,
        watch: ActiveWatch,
        dir_fd: int,
        item: WorkItem,
        judgement: Judgement,
        item_id: str,
        body: dict[str, Any],
        audit_seq: int,
    ) -> bool:
        """Fail-closed for a file that was not read (too large, unreadable): move the file itself."""
        store = self._usable_store(watch, item_id, "quarantine")
        if store is None:
            return False
        name = item.relpath.split(os.sep)[-1]
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            self._abort(watch, item, item_id, "quarantine", vanished=True, intended=False)
            return False
        known = judgement.refusal.identity if judgement.refusal else None
        swapped = known is not None and (st.st_dev, st.st_ino) != (known.dev, known.ino)
        if swapped or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            self._abort(watch, item, item_id, "quarantine", intended=False)
            return False
        sidecar = sidecar_for_unread(
            st,
            item_id=item_id,
            watch_id=watch.id,
            watch_root=watch.settings.path,
            relative_path=os.fsencode(item.relpath),
            verdict="unscanned",
            reason=body["reason"],
            audit_seq=audit_seq,
            why=str(body["reason"]),
        )
        intent = {
            "op": "quarantine",
            "watch": watch.id,
            "relpath_b64": _b64(item.relpath),
            "item_id": item_id,
            "identity": identity_fields(FileIdentity.of(st)),
            "sha256": None,
            "hold": hold_name(item_id),
            "sidecar": sidecar,
        }
        if not self._intend(watch, item_id, "quarantine", intent):
            return False
        try:
            stored = hand_over_unread(store, dir_fd, name, item_id, (st.st_dev, st.st_ino))
        except NotTheJudgedFile:
            self._abort(watch, item, item_id, "quarantine")
            return False
        except Vanished:
            self._abort(watch, item, item_id, "quarantine", vanished=True)
            return False
        except OSError as exc:
            self._fail(item_id, "quarantine", watch, exc, store)
            return False
        store.write_sidecar(item_id, {**sidecar, "stored_identity": stored})
        self._done(watch, item_id, "quarantine", {"unread": True})
        return True

    def _release(
        self, watch: ActiveWatch, dir_fd: int, item: WorkItem, snapshot: Snapshot, op_id: str
    ) -> bool:
        assert watch.release_fd is not None
        store = self._usable_store(watch, op_id, "release")
        if store is None:
            return False
        parts = item.relpath.split(os.sep)
        name = parts[-1]
        intent = {
            "op": "release",
            "watch": watch.id,
            "relpath_b64": _b64(item.relpath),
            "identity": identity_fields(snapshot.identity),
            "sha256": snapshot.sha256,
            "copy": copy_name(op_id),
            "hold": hold_name(op_id),
        }
        if not self._intend(watch, op_id, "release", intent):
            return False
        if not self._still_same(dir_fd, name, snapshot):
            self._abort(watch, item, op_id, "release")
            return False
        try:
            target_fd = make_subdir_chain(watch.release_fd, parts[:-1])
        except OSError as exc:
            self._fail(op_id, "release", watch, exc, store)
            return False
        try:
            final = hand_over_copy(
                store,
                dir_fd,
                name,
                op_id,
                snapshot,
                dst_dir_fd=target_fd,
                dst_name=name,
                clash_tag=tag_of(op_id),
                private=False,
            )
        except NotTheJudgedFile:
            self._abort(watch, item, op_id, "release")
            return False
        except Vanished:
            self._abort(watch, item, op_id, "release", vanished=True)
            return False
        except OSError as exc:
            self._fail(op_id, "release", watch, exc, store)
            return False
        finally:
            os.close(target_fd)
        to = os.path.join(*parts[:-1], final) if parts[:-1] else final
        # Shown as the decision shows the path: the name judged, matched spans masked (and printable).
        self._done(watch, op_id, "release", {"to": self.context.judge.judge_relative_name(to)[0].show()})
        return True

    def _intend(self, watch: ActiveWatch, op_id: str, op: str, intent: dict[str, Any]) -> bool:
        """Record the write-ahead intent; without it nothing moves (the file is judged again later)."""
        try:
            self.state.add_intent(op_id, op, intent)
        except sqlite3.Error:
            self._failed_before_acting(watch, op, op_id, "state database not writable")
            return False
        return True

    def _done(self, watch: ActiveWatch, op_id: str, op: str, extra: dict[str, Any]) -> None:
        self.audit.append("action.done", {"op": op, "id": op_id, "watch": watch.id, **extra})
        self._finish(op_id, "done")
        self._count("actions", op)

    def _finish(self, op_id: str, outcome: str) -> None:
        # Not finished (state not writable): the intent stays pending and startup recovery, reading the
        # file system, reaches the same conclusion.
        self._state_write(self.state.finish_intent, op_id, outcome)

    def _state_write(self, write: Callable[..., Any], *args: Any) -> bool:
        try:
            write(*args)
        except sqlite3.Error as exc:
            self._count("failures", "state")
            log.error("state not written", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    def _abort(
        self,
        watch: ActiveWatch,
        item: WorkItem,
        op_id: str,
        op: str,
        *,
        vanished: bool = False,
        intended: bool = True,
    ) -> None:
        reason = (
            "file vanished after it was judged"
            if vanished
            else "file changed after it was judged; judging it again"
        )
        self.audit.append("action.aborted", {"op": op, "id": op_id, "watch": watch.id, "reason": reason})
        if intended:
            self._finish(op_id, "aborted")
        self._count("actions", f"{op}_aborted")
        if not vanished:
            self._requeue(watch.id, item.relpath, Hint.STAT, "changed-after-judging")

    def _defer(self, watch: ActiveWatch, op_id: str, op: str, problem: str) -> None:
        """The quarantine directory is unusable: the file waits in the folder (reconcile judges it again
        once the directory is usable; `maintain` asks for that)."""
        self.audit.append(
            "action.deferred",
            {
                "op": op,
                "id": op_id,
                "watch": watch.id,
                "reason": f"quarantine directory unusable: {problem}; the file waits in the folder",
            },
        )
        self._count("actions", f"{op}_deferred")

    def _failed_before_acting(self, watch: ActiveWatch, op: str, op_id: str, error: str) -> None:
        self._count("failures", f"{op}:state")
        try:
            self.audit.append("action.failed", {"op": op, "id": op_id, "watch": watch.id, "error": error})
        except AuditError:
            pass
        log.error("action failed", op=op, watch=watch.id, error=error)

    def _fail(self, op_id: str, op: str, watch: ActiveWatch, exc: OSError, store: QuarantineStore) -> None:
        self.audit.append(
            "action.failed", {"op": op, "id": op_id, "watch": watch.id, "error": exc.strerror or str(exc)}
        )
        if store.lstat(hold_name(op_id)) is None:
            self._finish(op_id, "failed")
        else:  # the original could not be put back: startup recovery does it (the intent stays pending)
            log.error("original left held in the quarantine directory", op=op, id=op_id)
        self._count("failures", f"{op}:{errno.errorcode.get(exc.errno or 0, 'error')}")
        log.error("action failed", op=op, watch=watch.id, error=exc.strerror or str(exc))

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

    # ------------------------------------------------------------------------------------------ health

    def _usable_store(self, watch: ActiveWatch, op_id: str, op: str) -> QuarantineStore | None:
        """The watch's store, checked through its pinned fd just before a move; None when it cannot be
        used now, the step then recorded as deferred."""
        problem = self._store_problem(watch)
        if problem is not None or watch.store is None:
            self._defer(watch, op_id, op, problem or "no quarantine directory is open")
            return None
        return watch.store

    def _store_problem(self, watch: ActiveWatch) -> str | None:
        """Why the watch's quarantine directory cannot be used now (checked through its pinned fd)."""
        store = watch.store
        problem = "no quarantine directory is open" if store is None else store.problem()
        if problem is not None:
            self._note_store_trouble(watch, problem)
        return problem

    def _note_store_trouble(self, watch: ActiveWatch, problem: str) -> None:
        with self._lock:
            new = watch.id not in self._store_trouble
            self._store_trouble[watch.id] = problem
        if new:
            path = watch.store.path if watch.store else None
            log.error(
                "quarantine directory unusable; files wait", watch=watch.id, path=str(path), problem=problem
            )

    def reconfigure(self, context: PipelineContext) -> None:
        """Judge and act under `context` (a configuration's watches, judge, ruleset and sinks) for every
        file taken from now on; a worker finishes the file in hand under the context it began with.
        Called by the service on reload, and by the watch keeper as a watch is lost or re-armed."""
        self.context = context

    def use_audit(self, audit: AuditLog) -> None:
        """Append to `audit` from now on: the service reopened the log (after a write failure, or in a
        new file after rotation)."""
        self.audit = audit

    def maintain(self) -> tuple[dict[str, str], str | None]:
        """Once a tick: look after what acting depends on. A quarantine directory deleted or moved away is
        re-opened (created anew, private) at its path; one made unsafe waits until it is fixed; a state
        database that failed a write is probed. Returns the degraded reasons by key (`quarantine:<watch>`,
        `state`) and, when something recovered, why a reconcile should judge again what waited."""
        problems: dict[str, str] = {}
        recovered: list[str] = []
        for watch in list(self.context.watches.values()):
            store = watch.store
            if store is None:
                continue
            problem = store.problem()
            if problem is not None:
                self._note_store_trouble(watch, problem)
                problem = self._reopen_store(watch, problem)
            with self._lock:
                was = self._store_trouble.pop(watch.id, None) if problem is None else None
            if problem is not None:
                problems[f"quarantine:{watch.id}"] = (
                    f"quarantine directory {store.path} {problem}; files wait in the folder"
                )
            elif was is not None:
                recovered.append(f"quarantine:{watch.id}")
                log.warning("quarantine directory usable again", watch=watch.id, path=str(store.path))
        if self.state.write_problem is not None and not self.state.probe():
            problems["state"] = self.state.write_problem or "state database not writable"
            if not self._state_trouble:
                self._state_trouble = True
                log.error(
                    "state database not writable; files are judged again once it is",
                    problem=problems["state"],
                )
        self.state.scrub_wal()  # a finished intent's name left in the log by a busy reader goes now
        if self.state.take_recovered():
            self._state_trouble = False
            recovered.append("state")
            log.warning("state database writable again")
        return problems, ("recovered " + ", ".join(recovered)) if recovered else None

    def _reopen_store(self, watch: ActiveWatch, problem: str) -> str | None:
        """Open the store at its configured path again (creating it 0700 when missing); the old one stays
        open until the watch closes, as a worker may still hold it. Returns the problem left, if any."""
        old = watch.store
        assert old is not None
        try:
            fresh = QuarantineStore.open(old.path, same_fs_as_fd=watch.root_fd, create=True)
        except (QuarantineError, OSError):
            return problem
        st = os.fstat(fresh.fd)
        watch.excluded_dirs = watch.excluded_dirs | {(st.st_dev, st.st_ino)}
        watch.retired.append(old)
        watch.store = fresh
        log.warning("quarantine directory re-opened", watch=watch.id, path=str(fresh.path), was=problem)
        return None


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


def _record_error(exc: BaseException) -> str:
    return f"record_error ({type(exc).__name__})"


def _b64(relpath: str) -> str:
    return base64.b64encode(os.fsencode(relpath)).decode()
