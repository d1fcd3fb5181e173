"""The alert outbox as an operator sees it through the real daemon's /metrics: per sink, what was
delivered, what failed, what waits and for how long."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from dropwarden.act.alerts import retry_delay
from dropwarden.config import AlertsSettings

from .daemon_harness import metrics_port
from .test_daemon import PII, Drop, write


def sink_metrics(port: int) -> dict[str, dict[str, float]]:
    """Per sink id: delivered, failed, queued, oldest_age, read from the daemon's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    names = {
        "dropwarden_alerts_delivered_total": "delivered",
        "dropwarden_alerts_failed_total": "failed",
        "dropwarden_alerts_queued": "queued",
        "dropwarden_alerts_oldest_age_seconds": "oldest_age",
        "dropwarden_alerts_overflow_total": "overflow",
    }
    sinks: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                sinks.setdefault(sample.labels["sink"], {})[names[sample.name]] = sample.value
    return sinks


def test_per_sink_metrics_show_a_down_sinks_backlog_and_its_delivery_once_it_is_back(tmp_path):
    """While the sink is down its alerts are queued (their count and the oldest one's age grow) and its
    failed attempts counted; once it is back they are counted delivered and nothing is queued."""
    drop = Drop(tmp_path, extra="[alerts]\nretry_initial = 0.2\nretry_max = 0.5\n")
    siem = tmp_path / "siem"
    drop.config.write_text(drop.config.read_text().replace(str(drop.alerts), str(siem / "alerts.jsonl")))
    daemon = drop.daemon().start()
    try:
        port = metrics_port(daemon)
        write(drop.inbox / "a.txt", PII)
        write(drop.inbox / "b.txt", PII)
        daemon.wait_for(lambda: len(drop.sidecars()) == 2, what="quarantined while the sink is down")
        (sink,) = daemon.wait_for(lambda: list(sink_metrics(port)), what="the sink in /metrics")
        down = daemon.wait_for(
            lambda: (m := sink_metrics(port)[sink])["queued"] == 2 and m["failed"] >= 2 and m,
            what="the backlog and failures in /metrics",
        )
        assert down["delivered"] == 0
        time.sleep(0.5)
        assert sink_metrics(port)[sink]["oldest_age"] >= down["oldest_age"] + 0.4, "the backlog ages"
        siem.mkdir()  # the SIEM comes back
        back = daemon.wait_for(
            lambda: (m := sink_metrics(port)[sink])["delivered"] == 2 and m, what="delivered in /metrics"
        )
        assert back["queued"] == 0 and back["oldest_age"] == 0
    finally:
        daemon.stop()


def test_retry_waits_are_jittered_between_half_and_all_of_the_exponential_ceiling():
    settings = AlertsSettings(retry_initial=1.0, retry_max=300.0)
    for attempts, ceiling in ((0, 1.0), (3, 8.0), (30, 300.0)):
        waits = {retry_delay(settings, attempts) for _ in range(200)}
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert max(waits) - min(waits) > ceiling / 4, "the waits are spread, not one instant"


def test_a_full_outbox_degrades_the_daemon_which_keeps_quarantining_and_audits_every_alert_beyond_it(
    tmp_path,
):
    """`max_queued` bounds the undelivered rows: beyond it the daemon is degraded (/healthz, metrics, a
    log line), still quarantines, and each alert not queued is in the audit log (`alert.overflow`, its
    id) and counted; once the sink drains the outbox the daemon is healthy again."""
    drop = Drop(tmp_path, extra="[alerts]\nretry_initial = 0.2\nretry_max = 0.5\nmax_queued = 2\n")
    siem = tmp_path / "siem"
    drop.config.write_text(drop.config.read_text().replace(str(drop.alerts), str(siem / "alerts.jsonl")))
    daemon = drop.daemon().start()
    try:
        port = metrics_port(daemon)
        for name in ("a", "b", "c", "d"):
            write(drop.inbox / f"{name}.txt", PII)
        daemon.wait_for(lambda: len(drop.sidecars()) == 4, what="all quarantined, the outbox full or not")
        overflow = daemon.wait_for(lambda: daemon.records("alert.overflow"), what="alert.overflow audited")
        decided = {
            a["id"] for r in daemon.records("decision") for a in r["body"]["actions"] if a["op"] == "alert"
        }
        assert len(overflow) == 2 and {r["body"]["id"] for r in overflow} <= decided
        (sink,) = {s for r in overflow for s in r["body"]["sinks"]}
        metrics = daemon.wait_for(
            lambda: (m := sink_metrics(port)[sink])["overflow"] == 2 and m, what="counted"
        )
        assert metrics["queued"] == 2
        daemon.wait_for(lambda: "outbox" in healthz(port), what="degraded: outbox")
        assert any("alert outbox full" in line for line in daemon.log_lines)
        siem.mkdir()  # the SIEM comes back and drains the outbox
        daemon.wait_for(lambda: "outbox" not in healthz(port), what="healthy again once drained")
        delivered = [
            json.loads(line)["event"]["id"] for line in (siem / "alerts.jsonl").read_text().splitlines()
        ]
        assert len(delivered) == 2 and not set(delivered) & {r["body"]["id"] for r in overflow}
    finally:
        daemon.stop()


def healthz(port: int) -> dict[str, str]:
    """The degraded reasons /healthz reports (empty when healthy)."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())["degraded"]
    return {}


def test_alerts_beyond_a_sinks_rate_are_summarised_per_watch_and_type_and_each_listed_in_the_audit_log(
    tmp_path,
):
    """A sink with `rate_limit = 1` per `rate_interval` gets the first alert of the interval as it is and,
    once the interval ends, one summary alert counting the others per watch and type and listing their
    ids; each of those is in the audit log (`alert.summarised`): none is dropped."""
    drop = Drop(tmp_path)
    drop.config.write_text(
        drop.config.read_text().replace(
            f'path = "{drop.alerts}"\n', f'path = "{drop.alerts}"\nrate_limit = 1\nrate_interval = 3.0\n'
        )
    )
    daemon = drop.daemon().start()
    try:
        for name in ("a", "b", "c", "d"):
            write(drop.inbox / f"{name}.txt", PII)
        daemon.wait_for(lambda: len(drop.sidecars()) == 4, what="all quarantined")
        lines = daemon.wait_for(lambda: len(drop.alert_lines()) == 2 and drop.alert_lines(), timeout=15,
                                what="one alert and one summary")  # fmt: skip
        alerted = {
            a["id"] for r in daemon.records("decision") for a in r["body"]["actions"] if a["op"] == "alert"
        }
        first, summary = lines
        assert first["event"]["id"] in alerted and summary["event"]["action"] == "alert.summary"
        body = summary["dropwarden"]["summary"]
        audited = {r["body"]["id"] for r in daemon.records("alert.summarised")}
        assert body["alerts"] == 3 and set(body["alert_ids"]) == audited == alerted - {first["event"]["id"]}
        assert {(c["watch"], c["count"]) for c in body["counts"]} == {("inbox", 3)}
    finally:
        daemon.stop()


def test_a_kill_9_before_the_summary_is_due_loses_no_summarised_alert(tmp_path):
    """The alerts a flood-control window summarised are in the state database, not only in memory: the
    daemon killed (-9) before the window ends, then started again, sends the summary listing every one
    of them (each also in the audit log, `alert.summarised`)."""
    drop = Drop(tmp_path)
    drop.config.write_text(
        drop.config.read_text().replace(
            f'path = "{drop.alerts}"\n', f'path = "{drop.alerts}"\nrate_limit = 1\nrate_interval = 600.0\n'
        )
    )
    daemon = drop.daemon().start()
    try:
        for name in ("a", "b", "c", "d"):
            write(drop.inbox / f"{name}.txt", PII)
        daemon.wait_for(lambda: len(daemon.records("alert.summarised")) == 3, what="three summarised")
        daemon.wait_for(lambda: len(drop.alert_lines()) == 1, what="the first alert sent")
        daemon.kill()  # ten minutes before the summary was due
        audited = {r["body"]["id"] for r in daemon.records("alert.summarised")}
        daemon.start()
        lines = daemon.wait_for(lambda: len(drop.alert_lines()) == 2 and drop.alert_lines(), timeout=20,
                                what="the summary, after the restart")  # fmt: skip
        summary = lines[1]["dropwarden"]["summary"]
        assert lines[1]["event"]["action"] == "alert.summary"
        assert summary["alerts"] == 3 and set(summary["alert_ids"]) == audited
        assert {(c["watch"], c["count"]) for c in summary["counts"]} == {("inbox", 3)}
    finally:
        daemon.stop()
