"""The observability pack (packaging/observability) against the real daemon: the alert rules pass
promtool, and every metric the rules and the Grafana dashboard name is one a running daemon exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dropwarden import __version__
from dropwarden.audit.store import k0_on_host

from .conftest import require
from .daemon_harness import metrics_port
from .test_daemon import CLEAN, PII, Drop, write

PACK = Path(__file__).resolve().parent.parent / "packaging" / "observability"
RULES = PACK / "dropwarden-alerts.yml"
DASHBOARD = PACK / "dropwarden-dashboard.json"
METRIC_NAME = re.compile(r"\b(?:dropwarden|process)_[a-zA-Z0-9_]+")


SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def scrape(port: int) -> dict[str, list]:
    """Series name -> its samples, as Prometheus stores them (counters with `_total`); a family the
    daemon declares (`# TYPE`) with no sample yet (no failure so far, nothing degraded) is there, empty."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for suffix in SERIES_SUFFIXES.get(family.type, ("",)):
            samples.setdefault(family.name + suffix, [])
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def dashboard_expressions() -> list[str]:
    def walk(panels: list[dict]) -> list[str]:
        out = []
        for panel in panels:
            out += [t["expr"] for t in panel.get("targets", [])]
            out += walk(panel.get("panels", []))
        return out

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = walk(dashboard["panels"])
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def rule_expressions() -> list[str]:
    return re.findall(r"^\s+expr: (.+(?:\n\s{10,}.+)*)", RULES.read_text(), re.MULTILINE)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[dict[str, list], Path]:
    """What a daemon that judged a file with findings and a clean one exports, and its state dir."""
    drop = Drop(tmp_path_factory.mktemp("observed"))
    daemon = drop.daemon().start()
    try:
        write(drop.inbox / "memo.txt", PII)
        write(drop.inbox / "notes.txt", CLEAN)
        daemon.wait_for(lambda: len(daemon.records("decision")) == 2, what="both files judged")
        port = metrics_port(daemon)
        samples = daemon.wait_for(
            lambda: (s := scrape(port)) and "dropwarden_alerts_delivered_total" in s and s,
            what="the sink in /metrics",
        )
        return samples, drop.state
    finally:
        daemon.stop()


def test_the_alert_rules_pass_promtool():
    promtool = shutil.which("promtool")
    require(promtool is not None, "promtool (Debian package prometheus)")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_metric_the_dashboard_names_is_exported_by_a_running_daemon(exported):
    samples, _ = exported
    exprs = dashboard_expressions()
    assert len(exprs) >= 10
    named = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert named - set(samples) == set(), f"the dashboard names metrics the daemon does not export: {named}"


def test_every_metric_the_alert_rules_name_is_exported_by_a_running_daemon(exported):
    samples, _ = exported
    exprs = rule_expressions()
    assert len(exprs) >= 9, exprs
    named = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    for wanted in (
        "dropwarden_degraded",
        "dropwarden_queue_depth",
        "dropwarden_outbox_depth",
        "dropwarden_alerts_failed_total",
        "dropwarden_watchdog_last_ping_timestamp_seconds",
        "dropwarden_audit_key_on_host",
    ):
        assert wanted in named, f"no rule watches {wanted}"
    assert named - set(samples) == set(), f"the rules name metrics the daemon does not export: {named}"


def test_the_daemon_exports_its_version_process_metrics_watchdog_heartbeat_and_audit_key_presence(
    exported,
):
    samples, state = exported
    (info,) = samples["dropwarden_build_info"]
    assert info.labels == {"version": __version__} and info.value == 1
    assert samples["process_resident_memory_bytes"][0].value > 0
    assert samples["process_open_fds"][0].value > 0
    (heartbeat,) = samples["dropwarden_watchdog_last_ping_timestamp_seconds"]
    assert time.time() - 30 < heartbeat.value <= time.time()
    (key,) = samples["dropwarden_audit_key_on_host"]
    assert key.value == (1 if k0_on_host(state) is not None else 0)
