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
from dropwarden.activewatch import ActiveWatch, WatchSetupError, arm
from dropwarden.alerts import AlertDispatcher, HeadBeacon, build_sinks
from dropwarden.audit import AuditError, AuditLog
from dropwarden.audit.spool import ingest
from dropwarden.audit.store import k0_on_host
from dropwarden.config import ConfigError, LoadedConfig, Settings, load_config
from dropwarden.gate import get_gate
from dropwarden.metrics import Metrics
from dropwarden.metrics import Snapshot as MetricsSnapshot
from dropwarden.notify import Notifier
from dropwarden.pipeline import Pipeline, PipelineContext
from dropwarden.reconcile import reconcile
from dropwarden.recovery import recover
from dropwarden.runtime import Runtime, build_runtime, ruleset_version
from dropwarden.settle import Settler, WorkItem, settle_quiet_for
from dropwarden.state import State
from dropwarden.watch import Watcher
from dropwarden.watchkeeper import WatchKeeper

log = structlog.get_logger("dropwarden.service")


class StartupError(Exception):
    """The daemon cannot start safely; the message says why, for the operator."""


class Daemon:
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
        self.head_beacon = HeadBeacon(loaded.settings.audit.head_interval)
        self._threads: list[threading.Thread] = []
        self._busy_since: dict[int, float] = {}  # worker index -> when it took its current file
        self._reconciling = threading.Lock()
        self.notifier = Notifier()
        self.metrics: Metrics | None = None
        self._last_ping = 0.0

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
        settings = self.settings
        settings.state.dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        self.state = State(settings.state.dir / "state.db")
        self.audit = AuditLog.open(settings.audit.path, settings.state.dir, settings.audit)
        self._check_audit_key()
        try:
            return self._run()
        finally:
            if self.metrics is not None:
                self.metrics.close()
            try:
                self.audit.close()
            except AuditError as exc:
                log.error("audit log not closed cleanly", error=str(exc))
            self.state.close()

    def _run(self) -> int:
        runtime, watches = self._assemble(self.settings)
        self.runtime = runtime
        self.audit.append(
            "daemon.start",
            {
                "version": __version__,
                "pid": os.getpid(),
                "watches": sorted(watches),
                "config": [str(f) for f in self.loaded.files],
            },
        )
        recovered = recover(self.state, self.audit, watches)
        if recovered:
            log.info("recovered interrupted actions", count=recovered)
        self._warm_up(runtime)

        self.work: queue.Queue[WorkItem] = queue.Queue(maxsize=self.settings.daemon.queue_size)
        d = self.settings.daemon
        self.settler = Settler(
            self._resolve,
            self.work,
            quiet=d.settle_quiet,
            quiet_for=lambda watch: settle_quiet_for(self.settings, watch),
            stat_period=d.settle_stat,
            open_writer_timeout=d.open_writer_timeout,
            on_loss=self.request_reconcile,
        )
        self.sinks = build_sinks(self.settings.alerts)
        self.alerts = AlertDispatcher(
            self.state, self.sinks, self.settings.alerts, on_health=self._sink_health
        )
        context = PipelineContext(watches, runtime.judge, ruleset_version(runtime), list(self.sinks))
        self.pipeline = Pipeline(context, self.state, self.audit, self.alerts, self.settler.notify)
        if self.settings.metrics.listen:
            self.metrics = Metrics(self._metrics_snapshot)
            try:
                host, port = self.metrics.serve(self.settings.metrics.listen)
            except OSError as exc:
                self.metrics = None
                raise StartupError(
                    f"metrics: cannot listen on {self.settings.metrics.listen}: {exc}"
                ) from None
            self.pipeline.observe = self.metrics.observe
            log.info("metrics listening", host=host, port=port)
        self.watcher = Watcher([w.tree for w in watches.values()], self.settler, self.request_reconcile)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.settler.start()
        self.alerts.start()
        self._start_workers(d.workers)
        self.watcher.start()
        self.keeper = WatchKeeper(self)
        log.info("watching", watches=sorted(watches), workers=d.workers, version=__version__)
        self.ready()
        self._main_loop()
        return self._shutdown()

    def ready(self) -> None:
        """Every watch is armed and the startup reconcile is queued: tell the service manager."""
        self.notifier.ready(self.status_line())

    def status_line(self) -> str:
        counters = self.pipeline.counters
        unscanned = counters.verdicts.get("unscanned", 0)
        text = (
            f"judged {counters.judged} (findings {sum(counters.findings.values())}, unscanned {unscanned});"
            f" queue {self.work.qsize()}, settling {self.settler.pending}"
        )
        if self.degraded:
            text += "; degraded: " + ", ".join(sorted(self.degraded.values()))
        if self.warnings:
            text += "; warning: " + ", ".join(sorted(self.warnings.values()))
        return text

    def _assemble(self, settings: Settings) -> tuple[Runtime, dict[str, ActiveWatch]]:
        if not settings.watch:
            raise StartupError("no [[watch]] is configured: nothing to do")
        runtime = build_runtime(settings)
        for error in runtime.plugins.errors:
            log.warning("plugin not loaded", plugin=error.name, stage=error.stage, error=error.error)
        watches: dict[str, ActiveWatch] = {}
        try:
            for watch_settings in settings.watch:
                watches[watch_settings.id] = arm(watch_settings)
        except WatchSetupError as exc:
            for watch in watches.values():
                watch.close()
            runtime.close()
            raise StartupError(str(exc)) from None
        return runtime, watches

    def _warm_up(self, runtime: Runtime) -> None:
        """Let detectors and extractors load what they need (a large model) before READY=1, asking
        systemd for more start-up time while they do. A warm-up failure is logged; the detector (or
        extractor) then fails per file."""
        for detector in [*runtime.registry.detectors.values(), *runtime.registry.extractors.values()]:
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

    def _resolve(self, watch_id: str, relpath: str) -> str | None:
        watch = self.pipeline.context.watches.get(watch_id) if hasattr(self, "pipeline") else None
        return os.path.join(watch.tree.root, relpath) if watch else None

    def _start_workers(self, count: int) -> None:
        for index in range(count):
            thread = threading.Thread(target=self._worker, args=(index,), name=f"worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _worker(self, index: int) -> None:
        while True:
            item = self.work.get()
            if item is None:  # type: ignore[comparison-overlap]
                self.work.task_done()
                return
            self._busy_since[index] = time.monotonic()
            try:
                self.pipeline.process(item)
            finally:
                self._busy_since.pop(index, None)
                self.work.task_done()

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
                ingest(self.settings.state.dir, self.audit)
            except (AuditError, OSError) as exc:
                log.error("audit spool not ingested", error=str(exc))
            self._send_audit_head()
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
            if self.notifier.watchdog_usec:
                self.notifier.watchdog()
        self._merge_detector_health()
        self._merge_pipeline_health()
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
            if self.head_beacon.tick(self.audit.anchored, self.state, list(self.alerts.sinks)):
                self.alerts.kick()
        except Exception as exc:  # the state database is busy or broken: the next tick tries again
            log.error("audit head not queued for the alert sinks", error=f"{type(exc).__name__}: {exc}")

    def _merge_pipeline_health(self) -> None:
        """Quarantine directories and the state database, looked after by the pipeline: degraded while
        unusable, and a reconcile when one recovers (files that waited, or were not recorded, are judged
        again without waiting for the periodic sweep)."""
        problems, recovered = self.pipeline.maintain()
        ours = [k for k in self.degraded if k.startswith("quarantine:") or k == "state"]
        for key in [k for k in ours if k not in problems]:
            del self.degraded[key]
        self.degraded.update(problems)
        if recovered:
            self.request_reconcile(recovered)

    def _merge_detector_health(self) -> None:
        reported = self.runtime.health()
        for key in [k for k in self.degraded if k.startswith("detector:") and k[9:] not in reported]:
            del self.degraded[key]
        for key, reason in reported.items():
            self.degraded[f"detector:{key}"] = reason

    def _keep_audit_usable(self) -> None:
        """A failed write (disk full) poisons the log: reopen it once writing works again. A log renamed
        away (rotation: rename, never copy-and-truncate) is closed with a final checkpoint and continued
        in a new file at the configured path, whose first record names the old file's last checkpoint."""
        problem = self.audit.broken
        rotated = problem is None and self.audit.moved
        if problem is None and not rotated:
            self.degraded.pop("audit", None)
            return
        if problem is not None:
            self.degraded.setdefault("audit", f"audit log unwritable: {problem}")
        # Our own lock on the log would refuse the new handle: let go of the old one first. Until the
        # reopen works, appends fail, nothing moves, and files wait to be judged again.
        try:
            self.audit.close()
        except (AuditError, OSError):
            pass
        try:
            fresh = AuditLog.open(self.settings.audit.path, self.settings.state.dir, self.settings.audit)
        except (AuditError, OSError) as exc:
            if rotated:
                self.degraded["audit"] = f"audit log not reopened after rotation: {exc}"
                log.error("audit log not reopened after rotation", error=str(exc))
            return
        self.audit = self.pipeline.audit = fresh
        if rotated:
            log.info("audit log rotated", path=str(fresh.path), log_id=fresh.log_id)
        else:
            log.warning("audit log reopened after a write failure")
        # A worker that was appending to the old log as it closed has its file judged again.
        self.request_reconcile("audit rotated" if rotated else "audit reopened")

    def _reconcile(self, reason: str) -> None:
        with self._reconciling:
            ctx = self.pipeline.context
            total = 0
            for watch in ctx.watches.values():
                try:
                    total += reconcile(watch, self.state, ctx.ruleset, self.settler.notify, self._stop.is_set)
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
        try:
            loaded = load_config(self.config_path)
            if loaded.settings.state != self.settings.state or loaded.settings.audit != self.settings.audit:
                raise StartupError("[state] and [audit] cannot change on reload; restart the service")
            runtime, watches = self._assemble(loaded.settings)
        except (ConfigError, StartupError) as exc:
            log.error("reload rejected; keeping the running configuration", error=str(exc))
            self.audit.append("daemon.reload", {"accepted": False, "error": str(exc)[:2000]})
            return
        old_ctx, old_runtime = self.pipeline.context, self.runtime
        self.watcher.stop()
        self.pipeline.context = PipelineContext(
            watches, runtime.judge, ruleset_version(runtime), list(build_sinks(loaded.settings.alerts))
        )
        self.alerts.sinks = build_sinks(loaded.settings.alerts)
        self.alerts.settings = loaded.settings.alerts
        self.loaded, self.settings, self.runtime = loaded, loaded.settings, runtime
        self.watcher = Watcher([w.tree for w in watches.values()], self.settler, self.request_reconcile)
        self.watcher.start()
        # Workers may still hold the old context for the file in hand; give them a moment before closing.
        retire = threading.Timer(30.0, lambda: (_close_watches(old_ctx.watches), old_runtime.close()))
        retire.daemon = True  # never keeps a stopping daemon alive
        retire.start()
        self.audit.append(
            "daemon.reload",
            {"accepted": True, "watches": sorted(watches), "ruleset": self.pipeline.context.ruleset},
        )
        log.info("configuration reloaded", watches=sorted(watches))
        self.request_reconcile("reload")

    # ------------------------------------------------------------------------------------ stop

    def _shutdown(self) -> int:
        log.info("stopping", queued=self.work.qsize())
        self.stopping()
        self.watcher.stop()
        self.settler.stop()
        deadline = time.monotonic() + self.settings.daemon.drain_timeout
        while self.work.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.work.qsize()
        _discard(self.work)  # whatever is left is found again by the startup reconcile
        for _ in self._threads:
            self.work.put(None)  # type: ignore[arg-type]
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()) + 1)
        self.alerts.stop()
        try:
            self.audit.append("daemon.stop", {"judged": self.pipeline.counters.judged, "left_queued": left})
        except AuditError as exc:
            log.error("stop not audited", error=str(exc))
        _close_watches(self.pipeline.context.watches)
        self.runtime.close()
        log.info("stopped", judged=self.pipeline.counters.judged, left_queued=left)
        return 0

    def stopping(self) -> None:
        self.notifier.stopping()

    def _metrics_snapshot(self) -> MetricsSnapshot:
        counters = self.pipeline.counters
        return MetricsSnapshot(
            verdicts=dict(counters.verdicts),
            findings=dict(counters.findings),
            actions=dict(counters.actions),
            failures=dict(counters.failures),
            queue_depth=self.work.qsize(),
            settling=self.settler.pending,
            outbox_depth=self.state.outbox_depth(),
            degraded=dict(self.degraded),
            gate=get_gate(self.settings.gpu).stats(),
        )

    def _sink_health(self, sink: str, problem: str | None) -> None:
        if problem is None:
            self.degraded.pop(f"sink:{sink}", None)
        else:
            self.degraded[f"sink:{sink}"] = problem
            log.warning("alert sink failing; alerts stay in the outbox", sink=sink)


def _close_watches(watches: dict[str, ActiveWatch]) -> None:
    for watch in watches.values():
        try:
            watch.close()
        except OSError:
            pass


def _discard(work: queue.Queue) -> None:
    while True:
        try:
            work.get_nowait()
            work.task_done()
        except queue.Empty:
            return
