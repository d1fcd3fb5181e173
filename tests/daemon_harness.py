"""Run the real daemon as a child process and read what it wrote: audit log, quarantine, alerts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class DaemonProcess:
    def __init__(self, config: Path, audit_path: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.audit_path = audit_path
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []
        self._ready = threading.Event()

    def start(self, wait: bool = True, timeout: float = 60) -> DaemonProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DROPWARDEN_", "NOTIFY_SOCKET"))}
        env.update(self.env)
        self._ready.clear()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dropwarden", "run", "--config", str(self.config), "--log-format", "json"],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        threading.Thread(target=self._read_logs, args=(self.proc,), daemon=True).start()
        if wait:
            self.wait_ready(timeout)
        return self

    def _read_logs(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log_lines.append(line.rstrip("\n"))
            if '"event": "watching"' in line:
                self._ready.set()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode}:\n" + "\n".join(self.log_lines)
                )
            if time.monotonic() > deadline:
                raise AssertionError("daemon not ready:\n" + "\n".join(self.log_lines[-30:]))

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                "daemon did not stop on SIGTERM:\n" + "\n".join(self.log_lines[-30:])
            ) from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        return audit_records(self.audit_path, kind)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon died waiting for {what}:\n" + "\n".join(self.log_lines[-30:]))
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(self.log_lines[-30:]))
            time.sleep(0.05)

    def decisions_for(self, name: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.records("decision") if r["body"]["path"].endswith("/" + name)]


def audit_records(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break  # a line being written right now
            record = json.loads(raw)
            if kind is None or record["type"] == kind:
                out.append(record)
    return out


def metrics_port(daemon: DaemonProcess) -> int:
    """The port the daemon's metrics server bound (configured as port 0 in tests)."""
    for line in daemon.log_lines:
        if '"event": "metrics listening"' in line:
            return int(json.loads(line)["port"])
    raise AssertionError("no metrics listening line in the daemon's log")
