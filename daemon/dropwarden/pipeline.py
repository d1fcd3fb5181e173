"""The judging pipeline: a settled file → judgement → decision → audited, written-ahead actions."""

from __future__ import annotations

import base64
import errno
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from dropwarden.activewatch import ActiveWatch
from dropwarden.alerts import AlertDispatcher, alert_payload
from dropwarden.audit import AuditLog
from dropwarden.fsops import make_subdir_chain, open_subdir_chain, rename_noreplace
from dropwarden.intake import FileIdentity, Snapshot
from dropwarden.judge import Judge, Judgement
from dropwarden.policy import Decision, decide, operator_release
from dropwarden.quarantine import sidecar_for
from dropwarden.settle import Hint, WorkItem
from dropwarden.state import State
from dropwarden.verdict import Reason

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


def path_fields(watch: ActiveWatch, relpath: str) -> dict[str, Any]:
    """The file's path for records: readable text, plus the exact bytes when they are not UTF-8."""
    raw = os.fsencode(os.path.join(watch.tree.root, relpath))
    fields: dict[str, Any] = {"path": watch.display(relpath)}
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        fields["path_b64"] = base64.b64encode(raw).decode()
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
            log.exception("pipeline error", watch=item.watch, error=f"{type(exc).__name__}: {exc}")
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
                self._audit_skip(
                    watch, item.relpath, Reason.SYMLINK, "a directory on its path is a symlink", None
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
            judgement = ctx.judge.judge_name(
                dir_fd, name, watch.display(item.relpath), require_single_link=True
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
            self._audit_skip(watch, item.relpath, refusal.reason, refusal.detail, refusal.identity)
            if refusal.identity is not None:
                self.state.record_judged(refusal.identity, None, "skipped", ctx.ruleset, watch.id)
            return
        if refusal is not None and refusal.reason is Reason.CHANGED:
            self._requeue(watch.id, item.relpath, Hint.STAT, "changed-while-reading")
            return
        if refusal is not None and "vanished" in refusal.detail:
            return

        decision = decide(watch.settings, judgement.verdict)
        snapshot = judgement.snapshot
        released_from = None
        if snapshot is not None and "quarantine" in decision.actions:
            released_from = self.state.operator_released(snapshot.sha256)
            if released_from is not None:
                decision = operator_release(watch.settings, decision)
        planned: list[dict[str, Any]] = []
        item_id = alert_id = None
        if "quarantine" in decision.actions and snapshot is not None:
            item_id = uuid.uuid4().hex
            planned.append({"op": "quarantine", "id": item_id})
        elif "quarantine" in decision.actions:
            planned.append({"op": "quarantine", "skipped": "no snapshot to move (unreadable)"})
        if "release" in decision.actions and snapshot is not None:
            planned.append({"op": "release", "id": uuid.uuid4().hex})
        if "alert" in decision.actions and ctx.sinks:
            alert_id = uuid.uuid4().hex
            planned.append({"op": "alert", "id": alert_id, "sinks": ctx.sinks})

        verdict = judgement.verdict
        body = {
            "watch": watch.id,
            **path_fields(watch, item.relpath),
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
            "detectors": [run.to_dict() for run in judgement.runs],
            "actions": planned,
            **({"operator_released_from": released_from} if released_from else {}),
            "ms": round((time.perf_counter() - started) * 1000, 3),
        }
        acting = [p for p in planned if p["op"] in ("quarantine", "release") and "id" in p]
        record = self.audit.append("decision", body)
        if acting:
            self.audit.sync()  # the decision is the write-ahead intent: durable before anything moves
        # Clean files are the bulk: the audit log has them; the service log keeps to what needs a look.
        log_at = log.info if decision.outcome in ("finding", "unscanned") else log.debug
        log_at(
            "judged",
            watch=watch.id,
            path=body["path"],
            outcome=decision.outcome,
            types=sorted({f.type for f in verdict.findings}),
            reason=verdict.reason,
            actions=[p["op"] for p in planned],
            audit_seq=record.seq,
        )
        self._count("verdicts", decision.outcome)
        for finding in verdict.findings:
            self._count("findings", finding.type)

        if alert_id is not None:
            payload = alert_payload(
                alert_id=alert_id,
                watch=watch.id,
                path=body["path"],
                sha256=judgement.sha256,
                size=snapshot.identity.size if snapshot else None,
                outcome=decision.outcome,
                reason=verdict.reason,
                findings=decision.acting_findings,
                actions=decision.actions,
                audit_seq=record.seq,
                audit_head=self.audit.durable_head(),
            )
            self.state.enqueue_alert(alert_id, ctx.sinks, payload)
            self.alerts.kick()
            self._count("actions", "alert")

        for step in acting:
            assert snapshot is not None
            if step["op"] == "quarantine":
                self._quarantine(watch, dir_fd, item, snapshot, step["id"], decision, record.seq)
            else:
                self._release(watch, dir_fd, item, snapshot, step["id"])

        if snapshot is not None:
            self.state.record_judged(
                snapshot.identity, snapshot.sha256, decision.outcome, ctx.ruleset, watch.id
            )

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
    ) -> None:
        assert watch.store is not None
        name = item.relpath.split(os.sep)[-1]
        sidecar = sidecar_for(
            snapshot,
            item_id=item_id,
            watch_id=watch.id,
            watch_root=watch.settings.path,
            relative_path=os.fsencode(item.relpath),
            verdict=decision.outcome,
            reason=None,
            findings=[f.to_dict() for f in decision.acting_findings],
            audit_seq=audit_seq,
        )
        intent = {
            "op": "quarantine",
            "watch": watch.id,
            "relpath_b64": _b64(item.relpath),
            "item_id": item_id,
            "identity": identity_fields(snapshot.identity),
            "sidecar": sidecar,
        }
        self.state.add_intent(item_id, "quarantine", intent)
        if not self._still_same(dir_fd, name, snapshot):
            self._abort(watch, item, item_id, "quarantine")
            return
        try:
            moved = watch.store.move_in(dir_fd, name, item_id)
        except OSError as exc:
            self._fail(item_id, "quarantine", watch, item, exc)
            return
        mismatch = (moved.st_dev, moved.st_ino) != (snapshot.identity.dev, snapshot.identity.ino)
        if mismatch:
            sidecar["identity_mismatch"] = True  # swapped between check and rename: keep it locked away
        watch.store.write_sidecar(item_id, sidecar)
        self.audit.append(
            "action.done",
            {"op": "quarantine", "id": item_id, "watch": watch.id, "identity_mismatch": mismatch},
        )
        self.state.finish_intent(item_id, "done")
        self._count("actions", "quarantine")
        if mismatch:
            self._requeue(watch.id, item.relpath, Hint.STAT, "swapped")

    def _release(
        self, watch: ActiveWatch, dir_fd: int, item: WorkItem, snapshot: Snapshot, op_id: str
    ) -> None:
        assert watch.release_fd is not None
        parts = item.relpath.split(os.sep)
        name = parts[-1]
        intent = {
            "op": "release",
            "watch": watch.id,
            "relpath_b64": _b64(item.relpath),
            "identity": identity_fields(snapshot.identity),
        }
        self.state.add_intent(op_id, "release", intent)
        if not self._still_same(dir_fd, name, snapshot):
            self._abort(watch, item, op_id, "release")
            return
        try:
            target_fd = make_subdir_chain(watch.release_fd, parts[:-1])
        except OSError as exc:
            self._fail(op_id, "release", watch, item, exc)
            return
        try:
            final = _release_into(dir_fd, name, target_fd, op_id)
        except OSError as exc:
            self._fail(op_id, "release", watch, item, exc)
            return
        finally:
            os.close(target_fd)
        self.audit.append(
            "action.done",
            {
                "op": "release",
                "id": op_id,
                "watch": watch.id,
                "to": os.path.join(*parts[:-1], final) if parts[:-1] else final,
            },
        )
        self.state.finish_intent(op_id, "done")
        self._count("actions", "release")

    def _abort(self, watch: ActiveWatch, item: WorkItem, op_id: str, op: str) -> None:
        self.audit.append(
            "action.aborted",
            {
                "op": op,
                "id": op_id,
                "watch": watch.id,
                "reason": "file changed after it was judged; judging it again",
            },
        )
        self.state.finish_intent(op_id, "aborted")
        self._count("actions", f"{op}_aborted")
        self._requeue(watch.id, item.relpath, Hint.STAT, "changed-after-judging")

    def _fail(self, op_id: str, op: str, watch: ActiveWatch, item: WorkItem, exc: OSError) -> None:
        self.audit.append(
            "action.failed", {"op": op, "id": op_id, "watch": watch.id, "error": exc.strerror or str(exc)}
        )
        self.state.finish_intent(op_id, "failed")
        self._count("failures", f"{op}:{errno.errorcode.get(exc.errno or 0, 'error')}")
        log.error("action failed", op=op, watch=watch.id, error=exc.strerror or str(exc))

    def _audit_skip(
        self, watch: ActiveWatch, relpath: str, reason: Reason, detail: str, identity: FileIdentity | None
    ) -> None:
        self.audit.append(
            "skipped",
            {
                "watch": watch.id,
                **path_fields(watch, relpath),
                "reason": reason.value,
                "detail": detail,
                "identity": identity_fields(identity),
            },
        )
        self._count("verdicts", "skipped")

    def _count(self, table: str, key: str) -> None:
        with self._lock:
            getattr(self.counters, table)[key] += 1


def _b64(relpath: str) -> str:
    return base64.b64encode(os.fsencode(relpath)).decode()


def _release_into(src_dir_fd: int, name: str, target_fd: int, op_id: str) -> str:
    """Move without overwriting; on a name clash keep both by tagging ours with the operation id."""
    try:
        rename_noreplace(src_dir_fd, name, target_fd, name)
        return name
    except FileExistsError:
        stem, dot, ext = name.rpartition(".")
        tagged = f"{stem}.{op_id[:8]}.{ext}" if dot and stem else f"{name}.{op_id[:8]}"
        rename_noreplace(src_dir_fd, name, target_fd, tagged)
        return tagged
