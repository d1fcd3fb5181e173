"""The `exec` alert sink (ClamAV `VirusEvent` style): runs a configured argv with the alert on stdin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from dropwarden_actions.settings import ExecSinkSettings

# What the program gets besides the DROPWARDEN_* variables: nothing of the daemon's own environment.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class ExecFailed(Exception):
    """The program did not start, exited non-zero or ran past its timeout: the outbox retries it."""


class ExecSink:
    """A notify action: one run of `argv` per alert; `audit.head` events are not alerts and run nothing."""

    kind = "notify"

    def __init__(self, settings: ExecSinkSettings) -> None:
        self.id = settings.id
        self.settings = settings
        self._slots = threading.BoundedSemaphore(settings.max_concurrent)
        self._audit: Callable[[str, dict[str, Any]], None] = lambda kind, body: None

    def describe(self) -> str:
        return f"run {self.settings.argv[0]} with each alert as JSON on stdin"

    def use_audit(self, append: Callable[[str, dict[str, Any]], None]) -> None:
        """The core hands the function that appends an event to the audit log."""
        self._audit = append

    def send(self, payload: dict[str, Any]) -> None:
        event = payload.get("event", {})
        if event.get("kind") != "alert":
            return
        if not self._slots.acquire(timeout=self.settings.timeout):
            raise ExecFailed(f"{self.settings.max_concurrent} runs still going")
        try:
            self._run(payload, event)
        finally:
            self._slots.release()

    def _run(self, payload: dict[str, Any], event: dict[str, Any]) -> None:
        data = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        env = {
            **BASE_ENV,
            "DROPWARDEN_ALERT_ID": str(event.get("id", "")),
            "DROPWARDEN_WATCH": str(payload.get("dropwarden", {}).get("watch", "")),
            "DROPWARDEN_OUTCOME": str(event.get("action", "")),
            "DROPWARDEN_SEVERITY": str(event.get("severity", "")),
        }
        started = time.monotonic()
        record: dict[str, Any] = {"op": "exec", "sink": self.id, "alert": env["DROPWARDEN_ALERT_ID"]}
        try:
            process = subprocess.Popen(
                self.settings.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd="/",
                close_fds=True,
                start_new_session=True,  # its own process group, all of it killed at the timeout
            )
        except OSError as exc:
            self._record(record, started, outcome="not_started", error=exc.strerror or type(exc).__name__)
            raise ExecFailed(f"{self.settings.argv[0]} not started: {exc.strerror}") from None
        try:
            process.communicate(data, timeout=self.settings.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            self._record(record, started, outcome="timeout", exit_status=process.returncode)
            raise ExecFailed(
                f"{self.settings.argv[0]} ran past {self.settings.timeout:g} s; killed"
            ) from None
        except BaseException:
            _kill_group(process)
            raise
        status = process.returncode
        self._record(record, started, outcome="exited", exit_status=status)
        if status != 0:
            raise ExecFailed(f"{self.settings.argv[0]} exited with status {status}")

    def _record(self, record: dict[str, Any], started: float, **fields: Any) -> None:
        """The run in the audit log (`action.exec`): sink, alert id, outcome, exit status, duration; never
        what the program printed."""
        body = {**record, **fields, "ms": round((time.monotonic() - started) * 1000, 1)}
        try:
            self._audit("action.exec", body)
        except Exception:  # the outcome stands (and is retried when it failed); the log's own health shows
            pass

    def close(self) -> None:
        pass


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
