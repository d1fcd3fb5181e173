"""Alert delivery by the real daemon to a real rsyslogd: an outage during a burst and a `kill -9` of the
daemon lose no alert (duplicates only under the same id), and no seeded sensitive value reaches any
alert, log line or audit record in any format."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import DaemonProcess
from tests.rsyslog_server import RSYSLOGD, Rsyslog
from tests.test_siem_syslog import read_sd

if not os.path.exists(RSYSLOGD) or not shutil.which("openssl"):
    if os.environ.get("CI") == "true":
        raise RuntimeError("rsyslogd and openssl are required in CI (packaging/dev/system-deps.sh)")
    pytest.skip("rsyslogd or openssl not installed", allow_module_level=True)

CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.org"
TOKEN = "ghp_" + "Q7wZ2kLm9xR4tB8nV1cY6pJ3dF5hG0sAeUiO"
SEEDED = f"Customer {EMAIL}, card {CARD}, token {TOKEN}\n"
SECRETS = (CARD, CARD.replace(" ", ""), EMAIL, TOKEN, TOKEN[4:])


class SiemDrop:
    """A watched inbox whose alerts go to rsyslogd over TCP (one sink per `formats`) and to a jsonl file."""

    def __init__(
        self, root: Path, server: Rsyslog, formats: tuple[str, ...] = ("ecs",), transport: str = "tcp"
    ) -> None:
        self.root = root
        self.inbox = root / "drop" / "inbox"
        self.quarantine = root / "drop" / ".quarantine"
        self.audit = root / "log" / "audit.jsonl"
        self.alerts = root / "log" / "alerts.jsonl"
        self.inbox.mkdir(parents=True)
        self.config = root / "dropwarden.toml"
        address = f"127.0.0.1:{server.ports[transport]}"
        ca = f'ca_file = "{server.certs["ca"]}"\n' if transport == "tls" else ""
        sinks = "".join(
            f'[[alerts.sink]]\ntype = "syslog"\nname = "soc-{fmt}"\naddress = "{address}"\n'
            f'transport = "{transport}"\nformat = "{fmt}"\n{ca}'
            for fmt in formats
        )
        self.config.write_text(
            f'[state]\ndir = "{root / "state"}"\n[audit]\npath = "{self.audit}"\n'
            '[metrics]\nlisten = "127.0.0.1:0"\n'
            "[daemon]\nreconcile_interval = 5.0\nsettle_stat = 0.3\n"
            "[alerts]\nretry_initial = 0.2\nretry_max = 0.5\n"
            f'[[watch]]\nname = "inbox"\npath = "{self.inbox}"\nquarantine_dir = "{self.quarantine}"\n'
            f'{sinks}[[alerts.sink]]\ntype = "jsonl"\npath = "{self.alerts}"\n'
        )

    def daemon(self) -> DaemonProcess:
        return DaemonProcess(self.config, self.audit)

    def drop_files(self, count: int, prefix: str = "f") -> list[str]:
        names = [f"{prefix}{index:03}.txt" for index in range(count)]
        for name in names:
            (self.inbox / name).write_text(SEEDED)
        return names

    def quarantined(self) -> int:
        return len(list(self.quarantine.glob("*.json")))

    def alert_ids(self) -> list[str]:
        """Event ids of the alerts the daemon raised (its jsonl sink, which never goes down)."""
        if not self.alerts.exists():
            return []
        return [json.loads(line)["event"]["id"] for line in self.alerts.read_text().splitlines()]


def syslog_ids(server: Rsyslog, transport: str = "tcp") -> list[str]:
    return [read_sd(line)[0]["id"] for line in server.lines(transport)]


def wait_until(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    """Configured (ports chosen) but not started: each test starts it when its receiver should be up."""
    server = Rsyslog(tmp_path / "rsyslog")
    yield server
    server.stop()


def test_a_burst_while_the_receiver_is_down_is_delivered_in_full_once_it_starts(tmp_path, rsyslog):
    drop = SiemDrop(tmp_path, rsyslog)
    daemon = drop.daemon().start()
    try:
        names = drop.drop_files(12)
        daemon.wait_for(lambda: drop.quarantined() == len(names), what="burst quarantined, receiver down")
        daemon.wait_for(lambda: len(drop.alert_ids()) == len(names), what="alerts raised")
        daemon.wait_for(lambda: any('"alert sink failing' in line for line in daemon.log_lines), what="fail")
        assert rsyslog.lines("tcp") == []
        rsyslog.start()
        expected = set(drop.alert_ids())
        wait_until(lambda: set(syslog_ids(rsyslog)) >= expected, what="every alert delivered to rsyslog")
        time.sleep(1.0)  # and nothing else arrives after
    finally:
        daemon.stop()
    ids = syslog_ids(rsyslog)
    assert set(ids) == expected and len(expected) == len(names)  # none lost, no stranger
    # at least once: a repeat is only ever the same alert again, under its own id
    files = [read_sd(line)[0]["file"] for line in rsyslog.lines("tcp")]
    file_of = dict(zip(ids, files, strict=True))
    assert all(file_of[alert_id] == name for alert_id, name in zip(ids, files, strict=True))
    assert sorted(file_of.values()) == names


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_a_receiver_stopped_during_a_burst_gets_every_alert_once_started_again(tmp_path, rsyslog, transport):
    """The receiver goes down in the middle of a burst (rsyslogd stopped, its connection closed): the
    alerts raised meanwhile wait in the outbox and all arrive once it is back; a repeat is only ever the
    same alert under its own id."""
    drop = SiemDrop(tmp_path, rsyslog, transport=transport)
    rsyslog.start()
    daemon = drop.daemon().start()
    try:
        before = drop.drop_files(5, prefix="a")
        wait_until(lambda: len(set(syslog_ids(rsyslog, transport))) == 5, what="the first alerts delivered")
        rsyslog.stop()
        during = drop.drop_files(10, prefix="b")
        daemon.wait_for(lambda: len(drop.alert_ids()) == 15, what="the burst's alerts raised")
        daemon.wait_for(lambda: any('"alert sink failing' in line for line in daemon.log_lines), what="fail")
        rsyslog.start()
        expected = set(drop.alert_ids())
        wait_until(lambda: set(syslog_ids(rsyslog, transport)) >= expected, what="every alert delivered")
        time.sleep(1.0)  # and nothing else arrives after
    finally:
        daemon.stop()
    lines = rsyslog.lines(transport)
    ids = [read_sd(line)[0]["id"] for line in lines]
    assert set(ids) == expected and len(expected) == len(before) + len(during)
    file_of = {alert_id: read_sd(line)[0]["file"] for alert_id, line in zip(ids, lines, strict=True)}
    assert all(read_sd(line)[0]["file"] == file_of[i] for i, line in zip(ids, lines, strict=True))
    assert sorted(file_of.values()) == before + during


def test_a_daemon_killed_with_alerts_queued_delivers_them_all_after_restart(tmp_path, rsyslog):
    drop = SiemDrop(tmp_path, rsyslog)
    daemon = drop.daemon().start()
    names = drop.drop_files(8)
    daemon.wait_for(lambda: len(drop.alert_ids()) == len(names), what="alerts queued, receiver down")
    daemon.kill()  # SIGKILL: nothing flushed, nothing said goodbye
    expected = set(drop.alert_ids())
    rsyslog.start()
    daemon = drop.daemon().start()
    try:
        wait_until(lambda: set(syslog_ids(rsyslog)) >= expected, what="queued alerts delivered after restart")
        time.sleep(1.0)
    finally:
        daemon.stop()
    ids = syslog_ids(rsyslog)
    assert set(ids) == expected and len(expected) == len(names)


def test_seeded_sensitive_values_reach_no_alert_log_line_or_audit_record_in_any_format(tmp_path, rsyslog):
    rsyslog.start()
    drop = SiemDrop(tmp_path, rsyslog, formats=("ecs", "cef", "ocsf"))
    daemon = drop.daemon().start()
    try:
        names = drop.drop_files(3, prefix="secret")
        daemon.wait_for(lambda: len(drop.alert_ids()) == len(names), what="alerts raised")
        wait_until(lambda: len(rsyslog.lines("tcp")) >= 3 * len(names), what="alerts in all three formats")
    finally:
        daemon.stop()
    rsyslog.stop()  # rsyslogd writes what it holds
    lines = rsyslog.lines("tcp")
    formats = {"cef" if msg.startswith("CEF:0|") else json.loads(msg).get("class_uid", "ecs") for msg in
               (read_sd(line)[1] for line in lines)}  # fmt: skip
    assert formats == {"cef", "ecs", 2004}, formats
    searched = []
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if data == SEEDED.encode():
            continue  # a quarantined file itself: the content, kept on purpose
        searched.append(path.name)
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret!r} in {path}"
    assert {"audit.jsonl", "alerts.jsonl", "tcp.log"} <= set(searched), searched
    logs = "\n".join(daemon.log_lines)
    assert logs and not [secret for secret in SECRETS if secret in logs]
