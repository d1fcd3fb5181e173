"""The always-on service: arm watches, run settle/judge/act threads, reconcile, reload, drain, stop."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from dropwarden import __version__
from dropwarden.act.alerts import HeadBeacon
from dropwarden.act.recovery import recover
from dropwarden.assembly import (
    Collaborators,
    Configuration,
    Hooks,
    StartupError,
    assemble,
    close_watches,
    configure,
)
from dropwarden.audit import AuditError, AuditLog
from dropwarden.audit.spool import ingest
from dropwarden.audit.store import k0_on_host
from dropwarden.cluster import flow
from dropwarden.config import ConfigError, LoadedConfig, Settings
from dropwarden.configload import load_config
from dropwarden.gate import get_gate
from dropwarden.metrics import Snapshot as MetricsSnapshot
from dropwarden.notify import Notifier
from dropwarden.watch.reconcile import reconcile
from dropwarden.watch.settle import take_ready
from dropwarden.watch.watchkeeper import WatchKeeper

__all__ = ["Daemon", "StartupError"]

log = structlog.get_logger("dropwarden.service")


class Daemon:
    """The service's life: assemble the collaborators, start their threads, run the main loop (reload,
    watch checks, reconciles, audit upkeep, heartbeat), drain and stop."""

    def __init__(self, loaded: LoadedConfig, config_path: Path | None) -> None:
        self.loaded = loaded
        self.settings: Settings = loaded.settings
        self.config_path = config_path
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload_requested = False
        self._reconcile_requested: str | None = "startup"
        self.degraded: dict[str, str] = {}
        self.warnings: dict[str, str] = {}  # in STATUS, not in /healthz: nothing is broken
        self.last_heartbeat = 0.0  # unix time of the last tick with no worker stuck (a watchdog ping)
        self.head_beacon = HeadBeacon(loaded.settings.audit.head_interval)
        self._threads: list[threading.Thread] = []
        self._busy_since: dict[int, float] = {}  # worker index -> when it took its current file
        self._reconciling = threading.Lock()
        self.notifier = Notifier()

    # ------------------------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._reload_requested = True
        else:
            self._stop.set()
        self._wake.set()

    def request_reconcile(self, reason: str) -> None:
        self._reconcile_requested = reason
        self._wake.set()

    # ------------------------------------------------------------------------------------ run

    def run(self) -> int:
        hooks = Hooks(
            settings=lambda: self.settings,
            request_reconcile=self.request_reconcile,
            sink_health=self._sink_health,
            metrics_snapshot=self._metrics_snapshot,
            status=self._status,
        )
        self.parts: Collaborators = assemble(self.settings, hooks)
        self._check_audit_key()
        try:
            return self._run(self.parts)
        finally:
            self.parts.close()

    def _run(self, parts: Collaborators) -> int:
        watches = parts.configuration.watches
        parts.audit.append(
            "daemon.start",
            {
                "version": __version__,
                "pid": os.getpid(),
                "watches": sorted(watches),
                "config": [str(f) for f in self.loaded.files],
            },
        )
        recovered = recover(parts.state, parts.audit, watches)
        if recovered:
            log.info("recovered interrupted actions", count=recovered)
        self._warm_up(parts.configuration)
        if parts.metrics is not None:
            listen = self.settings.metrics.listen
            try:
                host, port = parts.metrics.serve(listen)
            except OSError as exc:
                parts.metrics = None
                raise StartupError(f"metrics: cannot listen on {listen}: {exc}") from None
            log.info("metrics listening", host=host, port=port)

        d = self.settings.daemon
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        parts.settler.start()
        if parts.remote is not None:
            parts.remote.start()  # asks again for the jobs a killed predecessor left outstanding
        parts.alerts.start()
        workers = d.workers  # role "watch" too: files wait for their verdicts in the queue (`flow`)
        self._start_workers(workers)
        parts.watcher.start()
        self.keeper = WatchKeeper(self)
        log.info(
            "watching",
            watches=sorted(watches),
            workers=workers,
            version=__version__,
            role=self.settings.cluster.role,
        )
        self.ready()
        self._main_loop()
        return self._shutdown()

    def ready(self) -> None:
        """Every watch is armed and the startup reconcile is queued: tell the service manager."""
        self.last_heartbeat = time.time()
        self.notifier.ready(self.status_line())

    def status_line(self) -> str:
        counters = self.parts.pipeline.counters
        unscanned = counters.verdicts.get("unscanned", 0)
        text = (
            f"judged {counters.judged} (findings {sum(counters.findings.values())}, unscanned {unscanned});"
            f" queue {self.parts.work.qsize()}, settling {self.parts.settler.pending}"
        )
        if self.degraded:
            text += "; degraded: " + ", ".join(sorted(self.degraded.values()))
        if self.warnings:
            text += "; warning: " + ", ".join(sorted(self.warnings.values()))
        return text

    def _warm_up(self, configuration: Configuration) -> None:
        """Let detectors and extractors load what they need (a large model) before READY=1, asking
        systemd for more start-up time while they do. A warm-up failure is logged; the detector (or
        extractor) then fails per file."""
        registry = configuration.runtime.registry
        for detector in [*registry.detectors.values(), *registry.extractors.values()]:
            warm_up = getattr(detector, "warm_up", None)
            if warm_up is None:
                continue
            done = threading.Event()

            def keep_extending(done: threading.Event = done) -> None:
                while not done.wait(10.0):
                    self.notifier.extend_timeout(30.0)

            self.notifier.extend_timeout(30.0)
            threading.Thread(target=keep_extending, name="extend-timeout", daemon=True).start()
            started = time.monotonic()
            try:
                warm_up()
                log.info("detector ready", detector=detector.id, seconds=round(time.monotonic() - started, 2))
            except Exception as exc:
                log.error(
                    "detector warm-up failed", detector=detector.id, error=f"{type(exc).__name__}: {exc}"
                )
            finally:
                done.set()

    def _start_workers(self, count: int) -> None:
        for index in range(count):
            thread = threading.Thread(target=self._worker, args=(index,), name=f"worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _worker(self, index: int) -> None:
        work, remote = self.parts.work, self.parts.remote
        while True:
            answers: list[Any] = []
            if remote is None:
                batch, taken, stop = take_ready(work, len(self._threads))  # judged in turn, acted on together
            else:  # answers for files in flight first, then files while there is room
                answers, batch, taken, stop = work.take(len(self._threads))
            self._busy_since[index] = time.monotonic()
            done = taken if remote is None else stop  # files in flight are done with when finished
            try:
                if remote is not None:
                    done += flow.process(self.parts.pipeline, remote, work, answers, batch)
                elif batch:
                    self.parts.pipeline.process_batch(batch)
            finally:
                self._busy_since.pop(index, None)
                if done:
                    work.task_done(done)
            if stop:
                return

    def _main_loop(self) -> None:
        next_reconcile = time.monotonic() + self.settings.daemon.reconcile_interval
        # Ping at a third of the watchdog period (systemd's advice), and look around at least every second.
        tick = min(1.0, self.notifier.watchdog_usec / 3e6) if self.notifier.watchdog_usec else 1.0
        while not self._stop.is_set():
            self._wake.wait(timeout=tick)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._reload_requested:
                self._reload_requested = False
                self._reload()
            self.keeper.check()  # before any sweep: a watch whose root left is not swept
            if time.monotonic() >= next_reconcile:
                self._reconcile_requested = self._reconcile_requested or "periodic"
            if self._reconcile_requested and not self._reconciling.locked():
                reason, self._reconcile_requested = self._reconcile_requested, None
                threading.Thread(
                    target=self._reconcile, args=(reason,), name="reconcile", daemon=True
                ).start()
                next_reconcile = time.monotonic() + self.settings.daemon.reconcile_interval
            self._keep_audit_usable()
            try:
                ingest(self.settings.state.dir, self.parts.audit)
            except (AuditError, OSError) as exc:
                log.error("audit spool not ingested", error=str(exc))
            self._send_audit_head()
            if self.parts.remote is not None:
                self.parts.remote.tick()
            self.heartbeat()

    def heartbeat(self) -> None:
        """STATUS every tick; WATCHDOG=1 only while no worker is stuck on one file (a wedged pipeline
        stops the pings, and systemd restarts us)."""
        now = time.monotonic()
        stalled = [now - since for since in list(self._busy_since.values())]
        limit = self.settings.daemon.stall_timeout
        if any(age > limit for age in stalled):
            self.degraded["pipeline"] = f"a worker has been busy on one file for over {limit:g}s"
        else:
            self.degraded.pop("pipeline", None)
            self.last_heartbeat = time.time()
            if self.notifier.watchdog_usec:
                self.notifier.watchdog()
        self._merge_detector_health()
        self._merge_pipeline_health()
        self._merge_outbox_health()
        self._check_audit_key()
        self.notifier.status(self.status_line())

    def _check_audit_key(self) -> None:
        """Warn (log once, STATUS while it lasts) while K_0 is on the host: whoever reads it can forge
        the audit log and its anchor."""
        path = k0_on_host(self.settings.state.dir)
        if path is None:
            self.warnings.pop("audit-k0", None)
        elif "audit-k0" not in self.warnings:
            self.warnings["audit-k0"] = "audit K_0 on this host (dropwarden audit export-key)"
            log.warning(
                "audit K_0 is still on this host: whoever can read it can forge the audit log and its"
                " anchor; store it offline and remove it with `dropwarden audit export-key`",
                path=str(path),
            )

    def _send_audit_head(self) -> None:
        """An audit.head event to the alert sinks now and then: the durable head, copied off the host."""
        try:
            parts = self.parts
            if self.head_beacon.tick(parts.audit.anchored, parts.state, parts.pipeline.context.sinks):
                parts.alerts.kick()
        except Exception as exc:  # the state database is busy or broken: the next tick tries again
            log.error("audit head not queued for the alert sinks", error=f"{type(exc).__name__}: {exc}")

    def _merge_pipeline_health(self) -> None:
        """Quarantine directories and the state database, looked after by the pipeline: degraded while
        unusable, and a reconcile when one recovers (files that waited, or were not recorded, are judged
        again without waiting for the periodic sweep)."""
        problems, recovered = self.parts.pipeline.maintain()
        ours = [k for k in self.degraded if k.startswith("quarantine:") or k == "state"]
        for key in [k for k in ours if k not in problems]:
            del self.degraded[key]
        self.degraded.update(problems)
        if recovered:
            self.request_reconcile(recovered)

    def _merge_outbox_health(self) -> None:
        """Degraded (`outbox`) while the alert outbox holds `[alerts] max_queued` undelivered rows: new
        alerts then go to the audit log only (`alert.overflow`); logged when it fills and when it drains."""
        limit = self.settings.alerts.max_queued
        try:
            depth = self.parts.state.outbox_depth()
        except Exception:  # the state database is busy or broken: its own health says so
            return
        full = depth >= limit
        if full and "outbox" not in self.degraded:
            log.error("alert outbox full; new alerts recorded in the audit log only", queued=depth, max=limit)
        elif not full and "outbox" in self.degraded:
            log.warning("alert outbox has room again", queued=depth, max=limit)
        if full:
            self.degraded["outbox"] = (
                f"alert outbox full ({depth} undelivered, max_queued {limit}): new alerts are in the audit "
                "log only (alert.overflow)"
            )
        else:
            self.degraded.pop("outbox", None)

    def _merge_detector_health(self) -> None:
        reported = self.parts.configuration.runtime.health()
        for key in [k for k in self.degraded if k.startswith("detector:") and k[9:] not in reported]:
            del self.degraded[key]
        for key, reason in reported.items():
            self.degraded[f"detector:{key}"] = reason

    def _keep_audit_usable(self) -> None:
        """A failed write (disk full) poisons the log: reopen it once writing works again. A log renamed
        away (rotation: rename, never copy-and-truncate) is closed with a final checkpoint and continued
        in a new file at the configured path, whose first record names the old file's last checkpoint."""
        audit = self.parts.audit
        problem = audit.broken
        rotated = problem is None and audit.moved
        if problem is None and not rotated:
            self.degraded.pop("audit", None)
            return
        if problem is not None:
            self.degraded.setdefault("audit", f"audit log unwritable: {problem}")
        # Our own lock on the log would refuse the new handle: let go of the old one first. Until the
        # reopen works, appends fail, nothing moves, and files wait to be judged again.
        try:
            audit.close()
        except (AuditError, OSError):
            pass
        try:
            fresh = AuditLog.open(self.settings.audit.path, self.settings.state.dir, self.settings.audit)
        except (AuditError, OSError) as exc:
            if rotated:
                self.degraded["audit"] = f"audit log not reopened after rotation: {exc}"
                log.error("audit log not reopened after rotation", error=str(exc))
            return
        self.parts.use_audit(fresh)
        if rotated:
            log.info("audit log rotated", path=str(fresh.path), log_id=fresh.log_id)
        else:
            log.warning("audit log reopened after a write failure")
        # A worker that was appending to the old log as it closed has its file judged again.
        self.request_reconcile("audit rotated" if rotated else "audit reopened")

    def _reconcile(self, reason: str) -> None:
        with self._reconciling:
            parts = self.parts
            ctx = parts.pipeline.context
            total = 0
            for watch in ctx.watches.values():
                try:
                    total += reconcile(
                        watch, parts.state, ctx.ruleset, parts.settler.notify, self._stop.is_set
                    )
                except OSError as exc:
                    log.error("reconcile failed", watch=watch.id, error=str(exc))
            log.info("reconciled", reason=reason, enqueued=total)

    # ------------------------------------------------------------------------------------ reload

    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            self._apply_reload()
        finally:
            self.notifier.ready(self.status_line())

    def _apply_reload(self) -> None:
        """Validate the configuration file again and, when it is acceptable, have the collaborators
        reconfigure themselves to it (`Collaborators.reconfigure`); otherwise keep running as before.
        Either way the audit log says which."""
        parts = self.parts
        try:
            loaded = load_config(self.config_path)
            if loaded.settings.state != self.settings.state or loaded.settings.audit != self.settings.audit:
                raise StartupError("[state] and [audit] cannot change on reload; restart the service")
            if loaded.settings.cluster != self.settings.cluster:
                raise StartupError("[cluster] cannot change on reload; restart the service")
            configuration = configure(loaded.settings)
        except (ConfigError, StartupError) as exc:
            log.error("reload rejected; keeping the running configuration", error=str(exc))
            parts.audit.append("daemon.reload", {"accepted": False, "error": str(exc)[:2000]})
            return
        old = parts.reconfigure(configuration)
        self.loaded, self.settings = loaded, loaded.settings
        # Workers may still hold the old context for the file in hand; give them a moment before closing.
        retire = threading.Timer(30.0, old.close)
        retire.daemon = True  # never keeps a stopping daemon alive
        retire.start()
        watches = configuration.watches
        parts.audit.append(
            "daemon.reload",
            {"accepted": True, "watches": sorted(watches), "ruleset": parts.pipeline.context.ruleset},
        )
        log.info("configuration reloaded", watches=sorted(watches))
        self.request_reconcile("reload")

    # ------------------------------------------------------------------------------------ stop

    def _shutdown(self) -> int:
        parts = self.parts
        work = parts.work
        log.info("stopping", queued=work.qsize())
        self.stopping()
        parts.watcher.stop()
        parts.settler.stop()
        deadline = time.monotonic() + self.settings.daemon.drain_timeout
        while work.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        left = work.qsize()
        _discard(work)  # whatever is left is found again by the startup reconcile
        for _ in self._threads:
            work.put(None)  # type: ignore[arg-type]
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()) + 1)
        parts.alerts.stop()
        judged = parts.pipeline.counters.judged
        try:
            parts.audit.append("daemon.stop", {"judged": judged, "left_queued": left})
        except AuditError as exc:
            log.error("stop not audited", error=str(exc))
        close_watches(parts.pipeline.context.watches)
        parts.configuration.runtime.close()
        log.info("stopped", judged=judged, left_queued=left)
        return 0

    def stopping(self) -> None:
        self.notifier.stopping()

    def _metrics_snapshot(self, parts: Collaborators) -> MetricsSnapshot:
        counters = parts.pipeline.counters
        return MetricsSnapshot(
            verdicts=dict(counters.verdicts),
            findings=dict(counters.findings),
            actions=dict(counters.actions),
            failures=dict(counters.failures),
            queue_depth=parts.work.qsize(),
            settling=parts.settler.pending,
            outbox_depth=parts.state.outbox_depth(),
            degraded=dict(self.degraded),
            gate=get_gate(self.settings.gpu).stats(),
            sinks=_sink_stats(parts),
            audit_key_on_host="audit-k0" in self.warnings,
            heartbeat=self.last_heartbeat,
            cluster=parts.remote.stats() if parts.remote is not None else {},
        )

    def _status(self, parts: Collaborators) -> dict[str, Any]:
        """What `dropwarden status` shows: the loopback endpoint's /status."""
        counters = parts.pipeline.counters
        watches = {  # configured ones: a lost watch leaves the pipeline's, not the status
            w.id: {"path": str(w.path), "lost": f"watch:{w.id}" in self.degraded} for w in self.settings.watch
        }
        return {
            "version": __version__,
            "pid": os.getpid(),
            "status": "degraded" if self.degraded else "ok",
            "degraded": dict(self.degraded),
            "warnings": dict(self.warnings),
            "watches": watches,
            "queue": parts.work.qsize(),
            "settling": parts.settler.pending,
            "outbox": parts.state.outbox_depth(),
            "judged": dict(counters.verdicts),
            "sinks": _sink_stats(parts),
            "recent": list(counters.recent),
            **({"cluster": parts.remote.stats()} if parts.remote is not None else {}),
        }

    def _sink_health(self, sink: str, problem: str | None) -> None:
        if problem is None:
            self.degraded.pop(f"sink:{sink}", None)
        else:
            self.degraded[f"sink:{sink}"] = problem
            log.warning("alert sink failing; alerts stay in the outbox", sink=sink)


def _sink_stats(parts: Collaborators) -> dict[str, dict[str, float]]:
    """Per sink id (configured now, or with rows still queued): delivered, failed, queued, oldest_age."""
    now = time.time()
    queued = parts.state.outbox_by_sink()
    dispatcher = parts.alerts
    stats: dict[str, dict[str, float]] = {}
    overflowed = parts.state.overflowed
    for sink in {*dispatcher.sinks, *queued, *dispatcher.delivered, *dispatcher.failed, *overflowed}:
        count, oldest = queued.get(sink, (0, now))
        stats[sink] = {
            "delivered": dispatcher.delivered[sink],
            "failed": dispatcher.failed[sink],
            "queued": count,
            "oldest_age": max(0.0, now - oldest),
            "overflow": parts.state.overflowed[sink],
        }
    return stats


def _discard(work: queue.Queue) -> None:
    while True:
        try:
            work.get_nowait()
            work.task_done()
        except queue.Empty:
            return
