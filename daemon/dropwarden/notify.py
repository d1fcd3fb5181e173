"""sd_notify: tell systemd we are ready, reloading, stopping, alive, and what we are doing.

Uses systemd-python (the `systemd` extra) when it is installed, otherwise writes the datagram to
$NOTIFY_SOCKET itself (abstract sockets included). Without $NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time

try:  # the `systemd` extra
    from systemd import daemon as _systemd_daemon
except ImportError:  # pragma: no cover - depends on the installation
    _systemd_daemon = None


class Notifier:
    def __init__(self, backend: str = "auto") -> None:
        self.socket_path = os.environ.get("NOTIFY_SOCKET", "")
        use_library = backend == "systemd" or (backend == "auto" and _systemd_daemon is not None)
        self.backend = "systemd-python" if use_library and _systemd_daemon is not None else "builtin"
        self.watchdog_usec = self._watchdog_usec()

    @property
    def enabled(self) -> bool:
        return bool(self.socket_path)

    @staticmethod
    def _watchdog_usec() -> int:
        """WATCHDOG_USEC when it is meant for this process (WATCHDOG_PID unset or ours), else 0."""
        pid = os.environ.get("WATCHDOG_PID")
        if pid and pid.isdigit() and int(pid) != os.getpid():
            return 0
        value = os.environ.get("WATCHDOG_USEC", "")
        return int(value) if value.isdigit() else 0

    def send(self, *fields: str) -> None:
        if not self.socket_path:
            return
        message = "\n".join(fields)
        if self.backend == "systemd-python":
            _systemd_daemon.notify(message)
            return
        address = self.socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for more start-up (or stop) time, e.g. while a large model loads."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")
