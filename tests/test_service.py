"""The daemon as a service: sd_notify to a real datagram socket, the watchdog, metrics and health."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from dropwarden.notify import Notifier

from .conftest import install_plugins
from .daemon_harness import DaemonProcess, metrics_port
from .test_daemon import CLEAN, PII, Drop, write


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket; records every message in order."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path if not path.startswith("@") else "\0" + path[1:])
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode().split("\n")))

    def fields(self) -> list[str]:
        return [field for _, message in self.messages for field in message]

    def first(self, prefix: str, after: int = 0) -> int:
        for index, field in enumerate(self.fields()[after:], after):
            if field.startswith(prefix):
                return index
        raise AssertionError(f"no {prefix} after position {after} in {self.fields()}")

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("abstract", [False, True], ids=["path-socket", "abstract-socket"])
def test_notify_sequence_ready_status_watchdog_reloading_stopping(tmp_path, abstract):
    drop = Drop(tmp_path)
    address = (
        f"@dropwarden-test-{os.getpid()}-{time.monotonic_ns()}" if abstract else str(tmp_path / "notify")
    )
    listener = NotifyListener(address)
    daemon = DaemonProcess(drop.config, drop.audit, {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "600000"})
    try:
        daemon.start()
        wait_until(lambda: "READY=1" in listener.fields(), what="READY=1")
        write(drop.inbox / "a.txt", PII)
        wait_until(lambda: any(f.startswith("STATUS=judged 1 ") for f in listener.fields()), what="STATUS")
        wait_until(lambda: listener.fields().count("WATCHDOG=1") >= 3, what="watchdog pings")
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: "RELOADING=1" in listener.fields(), what="RELOADING=1")
        wait_until(lambda: listener.fields().count("READY=1") >= 2, what="READY=1 after reload")
        assert daemon.stop() == 0
        fields = listener.fields()
    finally:
        listener.close()
        daemon.stop()

    ready = listener.first("READY=1")
    status = listener.first("STATUS=judged 1 ", ready)
    ping = listener.first("WATCHDOG=1", ready)
    reloading = listener.first("RELOADING=1", max(status, ping))
    assert fields[reloading + 1].startswith("MONOTONIC_USEC=")
    assert (
        abs(int(fields[reloading + 1].split("=")[1]) - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        < 60e6
    )
    ready_again = listener.first("READY=1", reloading)
    stopping = listener.first("STOPPING=1", ready_again)
    assert ready < status and ready < ping < reloading < ready_again < stopping
    assert re.search(r"findings [1-9]", fields[status]), fields[status]


WEDGE = '''
"""A detector that claims to be bounded but hangs on WEDGE-MARKER: a wedged pipeline."""
import time

from dropwarden.hookspecs import hookimpl


class Wedge:
    id = "wedge"
    version = "1"
    bounded = True  # called inline by the worker, so the worker itself is stuck
    view_kinds = frozenset({"text"})

    def detect(self, view, ctx):
        if "WEDGE-MARKER" in view.text:
            time.sleep(4.0)
        return []


@hookimpl
def dropwarden_register_detectors(register):
    register(Wedge())
'''


def test_no_watchdog_pings_while_the_pipeline_is_wedged(tmp_path):
    site = install_plugins(
        tmp_path / "build", tmp_path / "site", [("wedge_detector", WEDGE, 'wedge = "wedge_detector"')]
    )
    drop = Drop(tmp_path / "run", extra="stall_timeout = 1.0\nworkers = 1\n")
    listener = NotifyListener(str(tmp_path / "notify"))
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "300000", "PYTHONPATH": str(site)}
    daemon = DaemonProcess(drop.config, drop.audit, env)
    try:
        daemon.start()
        wait_until(lambda: listener.fields().count("WATCHDOG=1") >= 3, what="pings before the wedge")
        port = metrics_port(daemon)
        write(drop.inbox / "stuck.txt", "WEDGE-MARKER\n")
        wedged_at = wait_until(
            lambda: next(
                (t for t, m in listener.messages if any("degraded: a worker" in f for f in m)), None
            ),
            what="degraded STATUS",
        )
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert unhealthy.value.code == 503
        assert "pipeline" in json.loads(unhealthy.value.read())["degraded"]
        wait_until(lambda: daemon.decisions_for("stuck.txt"), what="the stuck file to finish")
        recovered_at = time.monotonic()
        wait_until(
            lambda: [t for t, m in listener.messages if "WATCHDOG=1" in m and t > recovered_at],
            what="pings after the wedge",
        )
        pings_while_wedged = [
            t for t, m in listener.messages if "WATCHDOG=1" in m and wedged_at < t < recovered_at - 0.5
        ]
        assert pings_while_wedged == []
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
    finally:
        listener.close()
        daemon.stop()


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def test_metrics_counters_match_the_audit_log(tmp_path):
    drop = Drop(tmp_path)
    daemon = drop.daemon().start()
    try:
        port = metrics_port(daemon)
        for index in range(6):
            write(drop.inbox / f"clean-{index}.txt", CLEAN)
        for index in range(3):
            write(drop.inbox / f"pii-{index}.txt", PII)
        (drop.inbox / "binary.bin").write_bytes(b"\x7fELF" + bytes(range(256)))
        os.mkfifo(drop.inbox / "pipe")
        daemon.wait_for(
            lambda: len(daemon.records("decision")) == 10 and daemon.records("skipped"), what="all judged"
        )
        time.sleep(0.5)
        metrics = _scrape(port)
    finally:
        daemon.stop()
    decisions = daemon.records("decision")
    for outcome in ("clean", "finding", "unscanned"):
        expected = sum(1 for r in decisions if r["body"]["outcome"] == outcome)
        assert metrics[f'dropwarden_files_judged_total{{outcome="{outcome}"}}'] == expected, outcome
    assert metrics['dropwarden_files_judged_total{outcome="skipped"}'] == len(daemon.records("skipped"))
    found_types = [f["type"] for r in decisions for f in r["body"]["findings"]]
    for finding_type in set(found_types):
        assert metrics[f'dropwarden_findings_total{{type="{finding_type}"}}'] == found_types.count(
            finding_type
        )
    assert metrics['dropwarden_actions_total{action="quarantine"}'] == len(daemon.records("action.done")) - 6
    assert metrics['dropwarden_stage_seconds_count{stage="judge"}'] >= 10
    assert metrics["dropwarden_healthy"] == 1
    assert metrics["dropwarden_queue_depth"] == 0


def test_the_builtin_notifier_reaches_abstract_and_path_sockets(tmp_path, monkeypatch):
    for address in (str(tmp_path / "n.sock"), f"@dw-unit-{os.getpid()}"):
        listener = NotifyListener(address)
        try:
            monkeypatch.setenv("NOTIFY_SOCKET", address)
            notifier = Notifier(backend="builtin")
            notifier.ready("starting")
            notifier.extend_timeout(90)
            wait_until(lambda listener=listener: len(listener.messages) == 2, what="two datagrams")
            assert listener.messages[0][1] == ["READY=1", "STATUS=starting"]
            assert listener.messages[1][1] == ["EXTEND_TIMEOUT_USEC=90000000"]
        finally:
            listener.close()


def test_without_notify_socket_the_notifier_is_silent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready()  # must not raise


def test_the_watchdog_period_is_only_ours_when_watchdog_pid_matches(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_usec == 3_000_000
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier().watchdog_usec == 0


def test_logs_are_json_for_the_journal_only_when_stderr_is_the_journal_stream(tmp_path, monkeypatch):
    import sys

    from dropwarden import logs

    with open(tmp_path / "stderr", "w") as fake_stderr:
        st = os.fstat(fake_stderr.fileno())
        monkeypatch.setattr(sys, "stderr", fake_stderr)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.under_journald()
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not logs.under_journald()
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not logs.under_journald()


SLOW_LOADER = '''
"""A detector with a slow warm-up, standing in for a large model load."""
import time

from dropwarden.hookspecs import hookimpl


class SlowLoader:
    id = "slow-loader"
    version = "1"
    view_kinds = frozenset({"image"})

    def warm_up(self):
        time.sleep(1.5)

    def detect(self, view, ctx):
        return []


@hookimpl
def dropwarden_register_detectors(register):
    register(SlowLoader())
'''


def test_start_up_time_is_extended_while_a_detector_warms_up(tmp_path):
    site = install_plugins(
        tmp_path / "build", tmp_path / "site", [("slow_loader", SLOW_LOADER, 'slow-loader = "slow_loader"')]
    )
    drop = Drop(tmp_path / "run")
    listener = NotifyListener(str(tmp_path / "notify"))
    daemon = DaemonProcess(
        drop.config, drop.audit, {"NOTIFY_SOCKET": str(tmp_path / "notify"), "PYTHONPATH": str(site)}
    )
    try:
        daemon.start()
        wait_until(lambda: "READY=1" in listener.fields(), what="READY=1")
        fields = listener.fields()
        extend = next(i for i, f in enumerate(fields) if f.startswith("EXTEND_TIMEOUT_USEC="))
        assert extend < fields.index("READY=1")
        assert any('"event": "detector ready"' in line and "slow-loader" in line for line in daemon.log_lines)
    finally:
        listener.close()
        daemon.stop()
