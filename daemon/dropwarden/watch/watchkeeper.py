"""Keep every configured watch watching: notice a root moved away, deleted or replaced, and file systems
mounted inside a watch; say so (log, STATUS, /healthz, audit, alert) and re-arm when a directory is back.

inotify watches inodes, not paths: after `mv inbox inbox.old` the watch follows inbox.old (whose events
watchdog still reports under the old names), and a new `inbox` is not watched at all. watchdog reports
a deleted root (IN_DELETE_SELF) but not a moved one (IN_MOVE_SELF), so the check that matters is the
periodic one: does the configured path still lead to the directory the watch holds open?
"""

from __future__ import annotations

import dataclasses
import os
import stat
import threading
import uuid
from typing import Any, Protocol

import structlog

from dropwarden.act.alerts import ecs_event, ecs_severity
from dropwarden.audit import AuditError
from dropwarden.config import Settings, WatchSettings
from dropwarden.findings import Severity
from dropwarden.watch.activewatch import ActiveWatch, WatchSetupError, arm
from dropwarden.watch.walk import display_path
from dropwarden.watch.watch import mount_points, mounts_inside

log = structlog.get_logger("dropwarden.watch.watchkeeper")

RETIRE_AFTER = 30.0  # seconds a replaced watch stays open for the worker that may still use it
LEFT_BEHIND = "files in the moved-away directory are no longer watched, judged or moved"


class _Host(Protocol):
    """What the keeper needs from the service: its running settings, its degraded reasons, and its
    collaborators (`dropwarden.assembly.Collaborators`: pipeline, watcher, audit, state, alerts)."""

    settings: Settings
    degraded: dict[str, str]
    parts: Any

    def request_reconcile(self, reason: str) -> None: ...


def root_problem(root: str, root_fd: int) -> str | None:
    """Why `root` no longer leads to the directory held open as `root_fd`, or None while it does."""
    pinned = os.fstat(root_fd)
    try:
        now = os.lstat(root)
    except FileNotFoundError:
        return "deleted" if pinned.st_nlink == 0 else "moved away"
    except OSError as exc:
        return f"cannot be checked ({exc.strerror})"
    if stat.S_ISLNK(now.st_mode):
        return "replaced by a symbolic link"
    if not stat.S_ISDIR(now.st_mode):
        return "replaced by something that is not a directory"
    if (now.st_dev, now.st_ino) != (pinned.st_dev, pinned.st_ino):
        return "deleted and recreated" if pinned.st_nlink == 0 else "replaced by another directory"
    return None


def where_now(root_fd: int) -> str | None:
    """Where the directory held open as `root_fd` is now, or None when it was deleted."""
    try:
        target = os.readlink(f"/proc/self/fd/{root_fd}")
    except OSError:
        return None
    return None if target.endswith(" (deleted)") else display_path(target)


class WatchKeeper:
    """Run `check()` from the service's main loop (about once a second, and when a root is deleted)."""

    def __init__(self, host: _Host) -> None:
        self._host = host
        self._lost: dict[str, str] = {}  # watch id -> what happened to its root
        self._unarmable: dict[str, str] = {}  # watch id -> why the last re-arm failed (logged once)
        self._mounts: dict[str, frozenset[str]] = {}  # watch id -> mounts reported

    def check(self) -> None:
        try:
            self._check()
        except Exception as exc:  # never the main loop's end: the next tick looks again
            log.exception("watch check failed", error=f"{type(exc).__name__}: {exc}")

    def _check(self) -> None:
        host = self._host
        configured = {w.id: w for w in host.settings.watch}
        for watch_id in [w for w in self._lost if w not in configured]:
            self._lost.pop(watch_id)
            host.degraded.pop(f"watch:{watch_id}", None)
        for watch_id, settings in configured.items():
            active = host.parts.pipeline.context.watches.get(watch_id)
            if active is None:
                if watch_id in self._lost:
                    self._try_rearm(settings)
                continue
            if watch_id in self._lost:
                self._rearmed(active, by="reload")
            problem = root_problem(active.tree.root, active.root_fd)
            if problem is not None:
                self._lose(active, problem)
        self._check_mounts(configured)

    # ------------------------------------------------------------------------------ lost roots

    def _lose(self, watch: ActiveWatch, problem: str) -> None:
        host = self._host
        watch_id, root = watch.id, display_path(watch.tree.root)
        moved_to = where_now(watch.root_fd) if problem != "deleted" else None
        # Off the context first: pending and queued files of this watch then find no watch and are
        # dropped, and no sweep walks the directory that left.
        pipeline = host.parts.pipeline
        ctx = pipeline.context
        pipeline.reconfigure(
            dataclasses.replace(ctx, watches={k: v for k, v in ctx.watches.items() if k != watch_id})
        )
        host.parts.watcher.unschedule(watch_id)
        _retire(watch)
        self._lost[watch_id] = problem
        self._report_mounts(watch_id, frozenset(), quiet=True)
        host.degraded[f"watch:{watch_id}"] = (
            f"watch {watch_id}: {root} {problem}; nothing is judged there until a directory is back"
        )
        body: dict[str, Any] = {"watch": watch_id, "path": root, "problem": problem}
        if moved_to is not None and moved_to != root:
            body["moved_to"] = moved_to
            body["left_behind"] = LEFT_BEHIND
        log.error(
            "watch lost: nothing is judged there until a directory is back at its path",
            watch=watch_id,
            path=root,
            problem=problem,
            moved_to=body.get("moved_to"),
            left_behind=body.get("left_behind"),
        )
        seq = self._audit("watch.lost", body)
        self._alert(watch_id, root, problem, seq)

    def _try_rearm(self, settings: WatchSettings) -> None:
        host = self._host
        root = os.path.abspath(settings.path)
        try:
            if not stat.S_ISDIR(os.lstat(root).st_mode):
                return  # nothing there yet, or not a directory (a symlink is never followed)
        except OSError:
            return
        try:
            fresh = arm(settings)
        except WatchSetupError as exc:
            self._not_rearmed(settings.id, str(exc))
            return
        # Into the context before its events can come, so none is dropped for want of a watch.
        pipeline = host.parts.pipeline
        ctx = pipeline.context
        pipeline.reconfigure(dataclasses.replace(ctx, watches={**ctx.watches, settings.id: fresh}))
        try:
            host.parts.watcher.schedule(fresh.tree)
        except OSError as exc:
            pipeline.reconfigure(ctx)
            fresh.close()
            self._not_rearmed(settings.id, f"watch {settings.id}: {display_path(root)}: {exc.strerror}")
            return
        self._rearmed(fresh, by="path")

    def _not_rearmed(self, watch_id: str, problem: str) -> None:
        self._host.degraded[f"watch:{watch_id}"] = f"{problem} (lost: {self._lost[watch_id]})"
        if self._unarmable.get(watch_id) != problem:
            self._unarmable[watch_id] = problem
            log.error("watch not re-armed", watch=watch_id, error=problem)

    def _rearmed(self, watch: ActiveWatch, by: str) -> None:
        host = self._host
        problem = self._lost.pop(watch.id)
        self._unarmable.pop(watch.id, None)
        host.degraded.pop(f"watch:{watch.id}", None)
        root = display_path(watch.tree.root)
        log.warning("watch re-armed", watch=watch.id, path=root, after=problem, by=by)
        self._audit("watch.rearmed", {"watch": watch.id, "path": root, "after": problem, "by": by})
        # What arrived before the new watch was in place is found by a sweep.
        host.request_reconcile("watch re-armed")

    # ------------------------------------------------------------------------------ mounts

    def _check_mounts(self, configured: dict[str, WatchSettings]) -> None:
        try:
            points: list[str] | None = mount_points()
        except OSError:
            points = None  # no /proc: the sweeps' device check still finds them
        watches = self._host.parts.pipeline.context.watches
        for watch_id in [w for w in self._mounts if w not in watches]:
            self._report_mounts(watch_id, frozenset(), quiet=True)
        for watch in watches.values():
            if watch.id not in configured:
                continue
            if points is not None:
                watch.tree.mounts.from_table = mounts_inside(watch.tree, points)
            self._report_mounts(watch.id, watch.tree.mounts.paths)

    def _report_mounts(self, watch_id: str, current: frozenset[str], quiet: bool = False) -> None:
        host = self._host
        known = self._mounts.get(watch_id, frozenset())
        key = f"watch:{watch_id}:mounts"
        if current == known:
            return
        if current:
            self._mounts[watch_id] = current
            shown = sorted(display_path(p) for p in current)
            host.degraded[key] = (
                f"watch {watch_id}: other file systems mounted inside are not watched, judged or moved: "
                + ", ".join(shown[:5])
                + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
            )
        else:
            self._mounts.pop(watch_id, None)
            host.degraded.pop(key, None)
        if quiet:
            return
        added = sorted(display_path(p) for p in current - known)
        gone = sorted(display_path(p) for p in known - current)
        if added:
            log.warning(
                "file system mounted inside a watch: files under it are not watched, judged or moved;"
                " give it its own [[watch]] (with its own quarantine_dir and release_to)",
                watch=watch_id,
                mounts=added,
            )
            self._audit("watch.mounts", {"watch": watch_id, "unwatched": added, "all": shown})
        if gone:
            log.info("file system inside a watch unmounted: watched again", watch=watch_id, mounts=gone)
            remaining = sorted(display_path(p) for p in current)
            self._audit("watch.mounts", {"watch": watch_id, "watched_again": gone, "all": remaining})
            # The directory under the mount point may not be watched (it was covered when the tree
            # was scheduled): watch the tree afresh, and sweep what is there.
            watch = host.parts.pipeline.context.watches.get(watch_id)
            if watch is not None:
                host.parts.watcher.unschedule(watch_id)
                try:
                    host.parts.watcher.schedule(watch.tree)
                except OSError as exc:
                    log.error("watch not rescheduled", watch=watch_id, error=str(exc))
            host.request_reconcile("mount gone")

    # ------------------------------------------------------------------------------ records

    def _audit(self, kind: str, body: dict[str, Any]) -> int | None:
        try:
            return self._host.parts.audit.append(kind, body).seq
        except (AuditError, OSError, ValueError) as exc:
            log.error("watch event not audited", type=kind, error=str(exc))
            return None

    def _alert(self, watch_id: str, root: str, problem: str, seq: int | None) -> None:
        host = self._host
        sinks = list(host.parts.pipeline.context.sinks)
        if not sinks:
            return
        alert_id = uuid.uuid4().hex
        try:
            host.parts.state.enqueue_alert(alert_id, sinks, _payload(alert_id, watch_id, root, problem, seq))
        except Exception as exc:  # the state database is busy or broken: the log line and STATUS stay
            log.error("watch alert not queued", watch=watch_id, error=f"{type(exc).__name__}: {exc}")
            return
        host.parts.alerts.kick()


def _payload(alert_id: str, watch_id: str, root: str, problem: str, seq: int | None) -> dict[str, Any]:
    """An ECS-shaped alert, like a file's: the watched folder stopped being watched."""
    return ecs_event(
        {
            "id": alert_id,
            "kind": "alert",
            "category": ["file", "configuration"],
            "type": ["info"],
            "action": "watch.lost",
            "severity": ecs_severity(Severity.HIGH),
            "reason": f"watched folder {problem}: nothing is judged there until a directory is back",
            "provider": "dropwarden",
        },
        file={"path": root, "name": os.path.basename(root), "type": "dir"},
        dropwarden={"watch": watch_id, "verdict": "watch_lost", "audit_seq": seq},
    )


def _retire(watch: ActiveWatch) -> None:
    """Close the watch's fds once no worker can still be acting through them (as a reload does)."""
    timer = threading.Timer(RETIRE_AFTER, _close_quietly, args=(watch,))
    timer.daemon = True
    timer.start()


def _close_quietly(watch: ActiveWatch) -> None:
    try:
        watch.close()
    except OSError:
        pass
