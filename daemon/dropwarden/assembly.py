"""Build the daemon's collaborators from settings in one place, and reconfigure them on reload."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from dropwarden.act.alerts import AlertDispatcher, configured_sinks, notify_actions
from dropwarden.audit import AuditError, AuditLog
from dropwarden.config import ConfigError, ConfigProblem, Settings, format_key
from dropwarden.metrics import Metrics
from dropwarden.metrics import Snapshot as MetricsSnapshot
from dropwarden.pipeline import Pipeline, PipelineContext
from dropwarden.registry import unknown_actions
from dropwarden.runtime import Runtime, build_runtime, ruleset_version
from dropwarden.state import State
from dropwarden.watch.activewatch import ActiveWatch, WatchSetupError, arm
from dropwarden.watch.settle import Settler, settle_quiet_for
from dropwarden.watch.watch import Watcher
from dropwarden.watch.workqueue import WorkQueue

log = structlog.get_logger("dropwarden.assembly")


class StartupError(Exception):
    """The daemon cannot start safely; the message says why, for the operator."""


@dataclass
class Configuration:
    """What one configuration file builds and a reload replaces as a whole: the loaded plugins and their
    detectors (`runtime`) and the armed watches."""

    settings: Settings
    runtime: Runtime
    watches: dict[str, ActiveWatch]

    def pipeline_context(self, sinks: list[str], remote: Any = None) -> PipelineContext:
        """What the workers judge and act with under this configuration (`remote`: `[cluster]` role
        "watch"'s `RemoteJudging`, which lives as long as the process)."""
        filters = {sink.id: sink for sink in self.settings.alerts.sink}
        ruleset = ruleset_version(self.runtime)
        return PipelineContext(self.watches, self.runtime.judge, ruleset, sinks, filters, remote)

    def close(self) -> None:
        """Close the watches' directories and the detectors (once no worker can still use them)."""
        close_watches(self.watches)
        self.runtime.close()


def configure(settings: Settings) -> Configuration:
    """Load the plugins and arm every watch of `settings`; StartupError when a watch cannot be armed or
    none is configured (nothing is left open then)."""
    if not settings.watch:
        raise StartupError("no [[watch]] is configured: nothing to do")
    runtime = build_runtime(settings)
    for error in runtime.plugins.errors:
        log.warning("plugin not loaded", plugin=error.name, stage=error.stage, error=error.error)
    unknown = unknown_actions(settings, runtime.registry)
    if unknown:  # a watch would act on nothing where its operator asked for something
        runtime.close()
        raise ConfigError([ConfigProblem("configuration", format_key(loc), why) for loc, why in unknown])
    watches: dict[str, ActiveWatch] = {}
    try:
        for watch_settings in settings.watch:
            watch = watches[watch_settings.id] = arm(watch_settings)
            if watch.may_stall and watch_settings.observer == "inotify":
                log.warning(
                    "inotify sees only this host's writes on a network file system",
                    watch=watch.id,
                    file_system=watch.file_system,
                    advice='observer = "polling"',
                )
    except WatchSetupError as exc:
        close_watches(watches)
        runtime.close()
        raise StartupError(str(exc)) from None
    return Configuration(settings, runtime, watches)


@dataclass
class Hooks:
    """What the collaborators call back into the service with."""

    settings: Callable[[], Settings]  # the running settings (they change on reload)
    request_reconcile: Callable[[str], None]
    sink_health: Callable[[str, str | None], None]  # (sink id, problem or None when it recovered)
    metrics_snapshot: Callable[[Collaborators], MetricsSnapshot]  # what /metrics reports of them
    status: Callable[[Collaborators], dict[str, Any]] | None = None  # what /status answers


@dataclass
class Collaborators:
    """Everything the service runs, built by `assemble`. `state` and `audit` live as long as the process;
    `configuration`, the pipeline's context, the alert sinks and the watcher follow the configuration
    (`reconfigure`). Nothing here runs a thread until the service starts it."""

    state: State
    audit: AuditLog
    configuration: Configuration
    work: WorkQueue
    settler: Settler
    alerts: AlertDispatcher
    pipeline: Pipeline
    watcher: Watcher
    metrics: Metrics | None
    hooks: Hooks
    remote: Any = None  # [cluster] role "watch": dropwarden.cluster.remote.RemoteJudging

    def reconfigure(self, configuration: Configuration) -> Configuration:
        """Run under `configuration` from now on: the alert dispatcher takes its sinks and retry timing,
        the pipeline its watches, judge, ruleset and sinks (for files taken from now on), and a new
        watcher watches its trees (the old one is stopped first). Returns the configuration replaced,
        for the caller to close once no worker can still hold its watches or detectors."""
        settings = configuration.settings
        registry = configuration.runtime.registry
        sinks = notify_actions(registry, lambda kind, body: self.pipeline.audit.append(kind, body))
        self.watcher.stop()
        sinks_now = configured_sinks(settings.alerts, registry)
        self.pipeline.reconfigure(configuration.pipeline_context(sinks_now, self.remote))
        self.alerts.reconfigure(sinks, settings.alerts)
        self.state.max_queued = settings.alerts.max_queued
        old, self.configuration = self.configuration, configuration
        self.watcher = _watcher(configuration, self.settler, self.hooks)
        self.watcher.start()
        return old

    def use_audit(self, audit: AuditLog) -> None:
        """Append to `audit` from now on, here and in the pipeline (the log was reopened after a write
        failure, or continued in a new file after rotation)."""
        self.audit = audit
        self.pipeline.use_audit(audit)

    def close(self) -> None:
        """Stop serving metrics and close the audit log and the state database (at the very end)."""
        if self.metrics is not None:
            self.metrics.close()
        if self.remote is not None:
            self.remote.close()
        try:
            self.audit.close()
        except AuditError as exc:
            log.error("audit log not closed cleanly", error=str(exc))
        self.state.close()


def assemble(settings: Settings, hooks: Hooks) -> Collaborators:
    """Open the state database and the audit log, load the plugins, arm the watches, and build the
    settler, alert dispatcher, pipeline, metrics and watcher that connect them. StartupError (or the
    state's or audit's own error) when the daemon cannot start; what was opened is closed again."""
    settings.state.dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    state = State(settings.state.dir / "state.db")
    try:
        audit = AuditLog.open(settings.audit.path, settings.state.dir, settings.audit)
    except BaseException:
        state.close()
        raise
    try:
        configuration = configure(settings)
    except BaseException:
        _close_quietly(audit, state)
        raise
    daemon = settings.daemon
    work = WorkQueue(maxsize=daemon.queue_size)
    pipeline: Pipeline  # built below; the settler resolves paths through it once it runs

    def resolve(watch_id: str, relpath: str) -> str | None:
        watch = pipeline.context.watches.get(watch_id)
        return os.path.join(watch.tree.root, relpath) if watch else None

    settler = Settler(
        resolve,
        work,
        quiet=daemon.settle_quiet,
        quiet_for=lambda watch: settle_quiet_for(hooks.settings(), watch),
        stat_period=daemon.settle_stat,
        open_writer_timeout=daemon.open_writer_timeout,
        on_loss=hooks.request_reconcile,
    )
    registry = configuration.runtime.registry
    sinks = notify_actions(registry, lambda kind, body: pipeline.audit.append(kind, body))
    alerts = AlertDispatcher(state, sinks, settings.alerts, on_health=hooks.sink_health)
    state.max_queued = settings.alerts.max_queued
    remote = _remote(settings, settler)
    if remote is not None:  # files wait for their verdicts in the queue, not in a thread each
        work.admit, remote.deliver, remote.reconsider = remote.admit, work.answer, work.reconsider
    context = configuration.pipeline_context(configured_sinks(settings.alerts, registry), remote)
    pipeline = Pipeline(context, state, audit, alerts, settler.notify)
    watcher = _watcher(configuration, settler, hooks)
    parts = Collaborators(
        state, audit, configuration, work, settler, alerts, pipeline, watcher, None, hooks, remote
    )
    if settings.metrics.listen:  # its registry takes a first snapshot as it is built
        status = hooks.status
        parts.metrics = Metrics(
            lambda: hooks.metrics_snapshot(parts), (lambda: status(parts)) if status is not None else None
        )
        pipeline.observe = parts.metrics.observe
    return parts


def _remote(settings: Settings, settler: Settler) -> Any:
    """`[cluster]` role "watch": the client that has judge hosts judge file contents; None otherwise
    (role "all" imports nothing of Redis)."""
    if settings.cluster.role != "watch":
        return None
    from dropwarden.watch.settle import Hint

    try:
        from dropwarden.cluster.remote import RemoteJudging
    except ImportError as exc:
        raise StartupError(f"[cluster] role watch needs redis-py (dropwarden[cluster]): {exc}") from None

    def requeue(watch: str, relpath: str) -> None:
        settler.notify(watch, relpath, Hint.STAT, "cluster-outstanding")

    try:
        largest = int(settings.limits.max_file_size)
        return RemoteJudging(settings.cluster, settings.state.dir, requeue, largest)
    except OSError as exc:  # the password file, most likely
        raise StartupError(f"[cluster]: {exc}") from None


def _watcher(configuration: Configuration, settler: Settler, hooks: Hooks) -> Watcher:
    trees = [watch.tree for watch in configuration.watches.values()]
    return Watcher(trees, settler, hooks.request_reconcile)


def _close_quietly(audit: AuditLog, state: State) -> None:
    try:
        audit.close()
    except AuditError as exc:
        log.error("audit log not closed cleanly", error=str(exc))
    state.close()


def close_watches(watches: dict[str, ActiveWatch]) -> None:
    """Close each watch's directories; one that fails to close does not stop the others."""
    for watch in watches.values():
        try:
            watch.close()
        except OSError:
            pass
