"""Prometheus metrics and the health endpoint, served on a loopback address.

Counters are read from the pipeline's own tallies at scrape time (one source of truth); stage
latencies are histograms the pipeline observes as it goes. `GET /healthz` answers 200 when the
daemon is healthy and 503 with the degraded reasons otherwise; `GET /status` answers what
`dropwarden status` prints (watches, queue, health, sinks, the last decisions) as JSON.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dropwarden import __version__

STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class Snapshot:
    """What the collector reports, gathered by the daemon when scraped."""

    verdicts: dict[str, int]
    findings: dict[str, int]
    actions: dict[str, int]
    failures: dict[str, int]
    queue_depth: int
    settling: int
    outbox_depth: int
    degraded: dict[str, str]
    gate: dict[str, dict[str, float]]
    # per alert sink id: delivered, failed (attempts since start), queued (undelivered rows),
    # oldest_age (seconds since the oldest undelivered row was queued; 0 when none), overflow (alerts not
    # queued because the outbox was full: in the audit log as `alert.overflow`)
    sinks: dict[str, dict[str, float]] = field(default_factory=dict)
    audit_key_on_host: bool = False  # K_0 still in the state directory (`dropwarden audit export-key`)
    # Unix time of the last main-loop tick with no worker stuck on a file: when WATCHDOG=1 goes to systemd
    heartbeat: float = 0.0
    # [cluster] role "watch": dropwarden.cluster.remote.RemoteJudging.stats(); empty otherwise
    cluster: dict[str, Any] = field(default_factory=dict)


class _DaemonCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield _counter("dropwarden_files_judged", "Files judged, by outcome.", "outcome", snap.verdicts)
        yield _counter("dropwarden_findings", "Findings, by type.", "type", snap.findings)
        yield _counter("dropwarden_actions", "Actions taken, by action.", "action", snap.actions)
        yield _counter("dropwarden_failures", "Pipeline and action failures, by kind.", "kind", snap.failures)
        yield GaugeMetricFamily(
            "dropwarden_queue_depth", "Settled files waiting to be judged.", snap.queue_depth
        )
        yield GaugeMetricFamily("dropwarden_settling", "Files waiting to be complete.", snap.settling)
        yield GaugeMetricFamily("dropwarden_outbox_depth", "Alerts not yet delivered.", snap.outbox_depth)
        degraded = GaugeMetricFamily(
            "dropwarden_degraded", "1 while the daemon is degraded, by reason.", labels=["reason"]
        )
        for reason in snap.degraded:
            degraded.add_metric([reason], 1)
        yield degraded
        yield GaugeMetricFamily(
            "dropwarden_healthy", "1 when nothing is degraded.", 0 if snap.degraded else 1
        )
        waiting = GaugeMetricFamily(
            "dropwarden_gate_waiting", "Jobs waiting at the GPU gate.", labels=["resource"]
        )
        in_flight = GaugeMetricFamily(
            "dropwarden_gate_in_flight", "Slots of the GPU gate held by this process.", labels=["resource"]
        )
        waits = CounterMetricFamily(
            "dropwarden_gate_waits", "Jobs that had to wait at the gate.", labels=["resource"]
        )
        for resource, stats in snap.gate.items():
            waiting.add_metric([resource], stats.get("waiting", 0))
            in_flight.add_metric([resource], stats.get("in_flight", 0))
            waits.add_metric([resource], stats.get("waits", 0))
        yield from (waiting, in_flight, waits)
        yield from _sink_metrics(snap.sinks)
        info = GaugeMetricFamily(
            "dropwarden_build_info", "The running version (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "dropwarden_audit_key_on_host",
            "1 while the audit key K_0 is still on this host (whoever reads it can forge the log).",
            1 if snap.audit_key_on_host else 0,
        )
        yield GaugeMetricFamily(
            "dropwarden_watchdog_last_ping_timestamp_seconds",
            "Unix time of the last main-loop tick with no worker stuck (a watchdog ping under systemd).",
            snap.heartbeat,
        )
        yield from _cluster_metrics(snap.cluster)


def _sink_metrics(sinks: dict[str, dict[str, float]]) -> Iterator[Metric]:
    families = {
        "delivered": CounterMetricFamily(
            "dropwarden_alerts_delivered", "Alerts delivered, by sink.", labels=["sink"]
        ),
        "failed": CounterMetricFamily(
            "dropwarden_alerts_failed", "Failed alert delivery attempts (retried), by sink.", labels=["sink"]
        ),
        "queued": GaugeMetricFamily(
            "dropwarden_alerts_queued", "Alerts in the outbox not yet delivered, by sink.", labels=["sink"]
        ),
        "overflow": CounterMetricFamily(
            "dropwarden_alerts_overflow",
            "Alerts not queued because the outbox was full (audit log: alert.overflow), by sink.",
            labels=["sink"],
        ),
        "oldest_age": GaugeMetricFamily(
            "dropwarden_alerts_oldest_age_seconds",
            "Age of the oldest alert not yet delivered, by sink (0 when none).",
            labels=["sink"],
        ),
    }
    for sink, stats in sorted(sinks.items()):
        for key, family in families.items():
            family.add_metric([sink], stats.get(key, 0))
    yield from families.values()


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class Metrics:
    """The registry, the stage histogram, and the HTTP server for /metrics and /healthz."""

    def __init__(
        self, snapshot: Callable[[], Snapshot], status: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ... (Linux /proc)
        ProcessCollector(registry=self.registry)
        self.stage_seconds = Histogram(
            "dropwarden_stage_seconds",
            "Time spent per pipeline stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_DaemonCollector(snapshot))
        self._snapshot = snapshot
        self._status = status
        self._server: ThreadingHTTPServer | None = None
        self.address: tuple[str, int] | None = None

    def observe(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def serve(self, listen: str) -> tuple[str, int]:
        host, port = parse_listen(listen)
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    self._answer(200, generate_latest(metrics.registry), "text/plain; version=0.0.4")
                elif self.path.split("?")[0] == "/healthz":
                    degraded = metrics._snapshot().degraded
                    body: dict[str, Any] = {"status": "degraded" if degraded else "ok", "degraded": degraded}
                    self._answer(503 if degraded else 200, json.dumps(body).encode(), "application/json")
                elif self.path.split("?")[0] == "/status" and metrics._status is not None:
                    status = json.dumps(metrics._status(), sort_keys=True).encode()
                    self._answer(200, status, "application/json")
                else:
                    self._answer(404, b"not found\n", "text/plain")

            def _answer(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
                pass

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        self._server = server
        self.address = server.server_address[:2]  # type: ignore[assignment]
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return self.address  # type: ignore[return-value]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def parse_listen(listen: str) -> tuple[str, int]:
    """ "127.0.0.1:9468" or "[::1]:9468"; only loopback addresses are accepted."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"metrics address {listen!r} is not a loopback address")
    return host, int(port)


_CLUSTER_GAUGES = {
    "queued": "Jobs in the cluster's stream no judge has read yet.",
    "in_flight": "Jobs a judge has read and not yet answered.",
    "outstanding": "This watcher's jobs waiting for a verdict.",
    "judge_rate": "Jobs judged per second across the cluster (the last minute).",
}
_CLUSTER_COUNTERS = {
    "redelivered": "Jobs claimed again after their judge went quiet (XAUTOCLAIM), cluster-wide.",
    "dead_lettered": "Jobs delivered more than max_deliver times, moved to the dead-letter stream.",
    "judged_total": "Jobs judged by the judge hosts, cluster-wide.",
    "sent": "Jobs this watcher sent.",
    "cache_hits": "Files whose verdict this watcher took from the cluster's verdict cache.",
    "failed": "Files this watcher got no verdict for (unscanned, judge_failed).",
}


def _cluster_metrics(stats: dict[str, Any]) -> Iterator[Metric]:
    """[cluster] role "watch": the backlog and the cluster's counts (none without a cluster)."""
    if not stats:
        return
    for key, help_text in _CLUSTER_GAUGES.items():
        yield GaugeMetricFamily(f"dropwarden_cluster_{key}", help_text, float(stats.get(key, 0)))
    for key, help_text in _CLUSTER_COUNTERS.items():
        name = key.removesuffix("_total")
        yield CounterMetricFamily(f"dropwarden_cluster_{name}", help_text, float(stats.get(key, 0)))
