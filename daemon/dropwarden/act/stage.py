"""The act stage: runs a decision's actions, with the write-ahead intents, identity re-checks and outcomes."""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from dropwarden.act.alerts import AlertDispatcher, alert_payload
from dropwarden.act.handover import NotTheJudgedFile, Vanished, copy_name, hold_name
from dropwarden.act.plan import MOVES
from dropwarden.act.policy import Decision
from dropwarden.act.quarantine import QuarantineError, QuarantineStore, sidecar_for, sidecar_for_unread
from dropwarden.act.records import (
    identity_fields,
    record_error,
    release_intent,
    relpath_b64,
    shown_in_clear,
    still_same,
)
from dropwarden.audit import AuditError, AuditLog
from dropwarden.judge.intake import FileIdentity, Snapshot
from dropwarden.judge.judge import Judgement
from dropwarden.judge.names import JudgedName
from dropwarden.registry import Action, MoveRequest
from dropwarden.state import State
from dropwarden.watch.activewatch import ActiveWatch
from dropwarden.watch.settle import Hint, WorkItem

log = structlog.get_logger("dropwarden.act.stage")


@dataclass(frozen=True)
class ActPlan:
    """A recorded decision handed to the act stage: the steps the decision record announced (`steps`,
    each {"op", "id"} or {"op", "deferred"}), and what the actions need of the judged file."""

    watch: ActiveWatch
    dir_fd: int
    item: WorkItem
    judgement: Judgement
    decision: Decision
    steps: list[dict[str, Any]]
    path: str  # as records show it (matched spans masked)
    reason: str | None
    audit_seq: int
    actions: Mapping[str, Action]
    render_name: Callable[[str], JudgedName]  # judges a relative path's name, for the `to` of a release


class ActStage:
    """Runs the steps of recorded decisions; True from `run` only when every move happened."""

    def __init__(
        self,
        state: State,
        audit: AuditLog,
        alerts: AlertDispatcher,
        requeue: Callable[[str, str, Hint, str], None],
        count: Callable[..., None],
    ) -> None:
        self.state = state
        self.audit = audit
        self.alerts = alerts
        self._requeue = requeue
        self.count = count
        self._lock = threading.Lock()
        self._store_trouble: dict[str, str] = {}  # watch id -> why its quarantine store is unusable
        self._state_trouble = False

    def run(self, plan: ActPlan) -> bool:
        moving = [s for s in plan.steps if s["op"] in MOVES and "id" in s]
        if moving:
            self.audit.sync()  # the decision is the write-ahead intent: durable before anything moves
        alert = next((s for s in plan.steps if s["op"] == "alert"), None)
        if alert is not None:
            self._notify(plan, alert["id"], alert["sinks"])
        complete = len(moving) == len([s for s in plan.steps if s["op"] in MOVES])
        snapshot = plan.judgement.snapshot
        for step in moving:
            if step["op"] == "quarantine" and snapshot is not None:
                done = self._quarantine(plan, snapshot, step["id"])
            elif step["op"] == "quarantine":
                done = self._quarantine_unread(plan, step["id"])
            else:
                assert snapshot is not None
                done = self._release(plan, snapshot, step["id"])
            complete = complete and done
        return complete

    # ------------------------------------------------------------------------------------------ notify

    def _notify(self, plan: ActPlan, alert_id: str, sinks: list[str]) -> None:
        """Put the alert in the durable outbox for each notify action; the dispatcher delivers it."""
        judgement, decision, snapshot = plan.judgement, plan.decision, plan.judgement.snapshot

        def build(findings: tuple[Any, ...], reason: str | None) -> dict[str, Any]:
            return alert_payload(
                alert_id=alert_id,
                watch=plan.watch.id,
                path=plan.path,
                sha256=judgement.sha256,
                size=snapshot.identity.size if snapshot else None,
                outcome=decision.outcome,
                reason=reason,
                findings=findings,
                actions=decision.actions,
                audit_seq=plan.audit_seq,
                audit_head=self.audit.durable_head(),
                counts=judgement.verdict.counts_dicts() if findings else [],
            )

        try:
            payload = build(decision.acting_findings, plan.reason)
        except Exception as exc:  # the alert still goes out, without what could not be rendered
            payload = build((), record_error(exc))
        types = {f.type for f in decision.acting_findings} or {"unscanned"}
        sinks, summarised = self.alerts.admit(sinks, alert_id, plan.watch.id, types)
        if summarised:  # over these sinks' rate: in their next summary alert, and listed here
            self.audit.append(
                "alert.summarised",
                {"id": alert_id, "watch": plan.watch.id, "sinks": summarised, "audit_seq": plan.audit_seq},
            )
            self.count("actions", "alert_summarised")
        if not sinks:
            return
        try:
            queued = self.state.enqueue_alert(alert_id, sinks, payload)
        except sqlite3.Error:
            self.failed_before_acting(plan.watch, "alert", alert_id, "state database not writable")
            raise  # nothing moves, nothing is recorded as judged: judged (and alerted) again
        if not queued:  # the outbox is full: the audit log keeps the alert's id, next to its decision
            self.audit.append(
                "alert.overflow",
                {"id": alert_id, "watch": plan.watch.id, "sinks": sinks, "audit_seq": plan.audit_seq},
            )
            self.count("actions", "alert_overflow")
            return
        self.alerts.kick()
        self.count("actions", "alert")

    # ------------------------------------------------------------------------------------------ moves

    def _quarantine(self, plan: ActPlan, snapshot: Snapshot, item_id: str) -> bool:
        watch, item = plan.watch, plan.item
        store = self._usable_store(watch, item_id, "quarantine")
        if store is None:
            return False
        try:
            findings = [f.to_dict() for f in plan.decision.acting_findings]
        except Exception as exc:  # the item is kept all the same; its findings are in the audit log
            findings = [{"error": record_error(exc)}]
        sidecar = sidecar_for(
            snapshot,
            item_id=item_id,
            watch_id=watch.id,
            watch_root=watch.settings.path,
            relative_path=os.fsencode(item.relpath),
            verdict=plan.decision.outcome,
            reason=None,
            findings=findings,
            audit_seq=plan.audit_seq,
        )
        intent = {
            "op": "quarantine",
            "watch": watch.id,
            "relpath_b64": relpath_b64(item.relpath),
            "item_id": item_id,
            "identity": identity_fields(snapshot.identity),
            "sha256": snapshot.sha256,
            "copy": copy_name(item_id),
            "hold": hold_name(item_id),
            "sidecar": sidecar,
        }
        if not self._intend(watch, item_id, "quarantine", intent):
            return False
        name = item.relpath.split(os.sep)[-1]
        if not still_same(plan.dir_fd, name, snapshot):
            self.abort(watch, item, item_id, "quarantine")
            return False
        request = MoveRequest(item_id, watch, store, plan.dir_fd, name, item.relpath, snapshot, None, sidecar)
        return self._move(plan, "quarantine", request, {})

    def _quarantine_unread(self, plan: ActPlan, item_id: str) -> bool:
        """Fail-closed for a file that was not read (too large, unreadable): move the file itself."""
        watch, item, judgement = plan.watch, plan.item, plan.judgement
        store = self._usable_store(watch, item_id, "quarantine")
        if store is None:
            return False
        name = item.relpath.split(os.sep)[-1]
        try:
            st = os.stat(name, dir_fd=plan.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            self.abort(watch, item, item_id, "quarantine", vanished=True, intended=False)
            return False
        known = judgement.refusal.identity if judgement.refusal else None
        swapped = known is not None and (st.st_dev, st.st_ino) != (known.dev, known.ino)
        if swapped or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            self.abort(watch, item, item_id, "quarantine", intended=False)
            return False
        sidecar = sidecar_for_unread(
            st,
            item_id=item_id,
            watch_id=watch.id,
            watch_root=watch.settings.path,
            relative_path=os.fsencode(item.relpath),
            verdict="unscanned",
            reason=plan.reason,
            audit_seq=plan.audit_seq,
            why=str(plan.reason),
        )
        intent = {
            "op": "quarantine",
            "watch": watch.id,
            "relpath_b64": relpath_b64(item.relpath),
            "item_id": item_id,
            "identity": identity_fields(FileIdentity.of(st)),
            "sha256": None,
            "hold": hold_name(item_id),
            "sidecar": sidecar,
        }
        if not self._intend(watch, item_id, "quarantine", intent):
            return False
        expected = (st.st_dev, st.st_ino)
        request = MoveRequest(item_id, watch, store, plan.dir_fd, name, item.relpath, None, expected, sidecar)
        return self._move(plan, "quarantine", request, {"unread": True})

    def _release(self, plan: ActPlan, snapshot: Snapshot, op_id: str) -> bool:
        watch, item = plan.watch, plan.item
        assert watch.release_fd is not None
        store = self._usable_store(watch, op_id, "release")
        if store is None:
            return False
        name = item.relpath.split(os.sep)[-1]
        intent = release_intent(watch.id, item.relpath, snapshot, op_id)
        if not self._intend(watch, op_id, "release", intent):
            return False
        if not still_same(plan.dir_fd, name, snapshot):
            self.abort(watch, item, op_id, "release")
            return False
        request = MoveRequest(op_id, watch, store, plan.dir_fd, name, item.relpath, snapshot)
        return self._move(plan, "release", request, {})

    def _move(self, plan: ActPlan, op: str, request: MoveRequest, extra: dict[str, Any]) -> bool:
        """Run the registered move action; what it raises is the outcome, recorded here."""
        watch, op_id, store = plan.watch, request.op_id, request.store
        action = plan.actions.get(op)
        if action is None or action.kind != "move":
            self.fail(
                op_id, op, watch, OSError(errno.ENOSYS, f"no loaded plugin registers action {op}"), store
            )
            return False
        try:
            to = action.move(request)  # type: ignore[attr-defined]
        except NotTheJudgedFile:
            self.abort(watch, plan.item, op_id, op)
            return False
        except Vanished:
            self.abort(watch, plan.item, op_id, op, vanished=True)
            return False
        except OSError as exc:
            self.fail(op_id, op, watch, exc, store)
            return False
        if to is not None:
            # Shown as the decision shows the path: the name judged, matched spans masked (and printable).
            extra = {**extra, "to": plan.render_name(to).show()}
        self._done(
            watch, op_id, op, extra, path_in_audit_log=shown_in_clear(plan.judgement.name, plan.item.relpath)
        )
        return True

    # ------------------------------------------------------------------------------------------ outcomes

    def _intend(self, watch: ActiveWatch, op_id: str, op: str, intent: dict[str, Any]) -> bool:
        """Record the write-ahead intent; without it nothing moves (the file is judged again later)."""
        try:
            self.state.add_intent(op_id, op, intent)
        except sqlite3.Error:
            self.failed_before_acting(watch, op, op_id, "state database not writable")
            return False
        return True

    def _done(
        self, watch: ActiveWatch, op_id: str, op: str, extra: dict[str, Any], *, path_in_audit_log: bool
    ) -> None:
        self.audit.append("action.done", {"op": op, "id": op_id, "watch": watch.id, **extra})
        self._finish(op_id, "done", path_in_audit_log=path_in_audit_log)
        self.count("actions", op)

    def _finish(self, op_id: str, outcome: str, *, path_in_audit_log: bool = False) -> None:
        # Not finished (state not writable): the intent stays pending and startup recovery, reading the
        # file system, reaches the same conclusion.
        finish = functools.partial(self.state.finish_intent, path_in_audit_log=path_in_audit_log)
        self.state_write(finish, op_id, outcome)

    def state_write(self, write: Callable[..., Any], *args: Any) -> bool:
        """A state write whose failure is counted and logged, not raised (the file is judged again)."""
        try:
            write(*args)
        except sqlite3.Error as exc:
            self.count("failures", "state")
            log.error("state not written", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    def abort(
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
        self.count("actions", f"{op}_aborted")
        if not vanished:
            self._requeue(watch.id, item.relpath, Hint.STAT, "changed-after-judging")

    def defer(self, watch: ActiveWatch, op_id: str, op: str, problem: str) -> None:
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
        self.count("actions", f"{op}_deferred")

    def failed_before_acting(self, watch: ActiveWatch, op: str, op_id: str, error: str) -> None:
        self.count("failures", f"{op}:state")
        try:
            self.audit.append("action.failed", {"op": op, "id": op_id, "watch": watch.id, "error": error})
        except AuditError:
            pass
        log.error("action failed", op=op, watch=watch.id, error=error)

    def fail(self, op_id: str, op: str, watch: ActiveWatch, exc: OSError, store: QuarantineStore) -> None:
        self.audit.append(
            "action.failed", {"op": op, "id": op_id, "watch": watch.id, "error": exc.strerror or str(exc)}
        )
        if store.lstat(hold_name(op_id)) is None:
            self._finish(op_id, "failed")
        else:  # the original could not be put back: startup recovery does it (the intent stays pending)
            log.error("original left held in the quarantine directory", op=op, id=op_id)
        self.count("failures", f"{op}:{errno.errorcode.get(exc.errno or 0, 'error')}")
        log.error("action failed", op=op, watch=watch.id, error=exc.strerror or str(exc))

    # ------------------------------------------------------------------------------------------ health

    def _usable_store(self, watch: ActiveWatch, op_id: str, op: str) -> QuarantineStore | None:
        """The watch's store, checked through its pinned fd just before a move; None when it cannot be
        used now, the step then recorded as deferred."""
        problem = self.store_problem(watch)
        if problem is not None or watch.store is None:
            self.defer(watch, op_id, op, problem or "no quarantine directory is open")
            return None
        return watch.store

    def store_problem(self, watch: ActiveWatch) -> str | None:
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

    def maintain(self, watches: Iterable[ActiveWatch]) -> tuple[dict[str, str], str | None]:
        """Once a tick: look after what acting depends on. A quarantine directory deleted or moved away is
        re-opened (created anew, private) at its path; one made unsafe waits until it is fixed; a state
        database that failed a write is probed. Returns the degraded reasons by key (`quarantine:<watch>`,
        `state`) and, when something recovered, why a reconcile should judge again what waited."""
        problems: dict[str, str] = {}
        recovered: list[str] = []
        for watch in list(watches):
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
