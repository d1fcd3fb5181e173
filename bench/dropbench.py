"""Shared machinery of the daemon benchmarks: start `dropwarden run`, time files as users see them, RSS."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BODY_4K = (b"Weekly status: all systems nominal, nothing to report.\n" * 80)[:4096]

IN_MODIFY, IN_MOVED_FROM, IN_DELETE = 0x2, 0x40, 0x200
_EVENT = struct.Struct("iIII")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far, s: per file, the figure a busy machine skews least."""
    user, system = user_system_seconds(pid)
    return user + system


def user_system_seconds(pid: int) -> tuple[float, float]:
    """The process's user and system CPU time so far, s, apart."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def file_system_of(path: Path) -> str:
    """`path`'s file system as the daemon's mount table reader sees it, with the file system's own
    options: "ext4 (rw,discard) at /" — they matter (online `discard` makes every unlink, and so
    every release, cost more)."""
    from dropwarden.watch.watch import mount_holding

    mount = mount_holding(os.path.realpath(path))
    return "?" if mount is None else f"{mount.kind} ({mount.options}) at {mount.point}"


@dataclass
class Daemon:
    """A running `dropwarden run` on a temporary inbox."""

    proc: subprocess.Popen[bytes]
    root: Path
    inbox: Path
    audit: Path
    release: bool

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def write_config(root: Path, *, release: bool, workers: int = 2, extra: str = "") -> Path:
    """`root`/inbox made, and `root`/dropwarden.toml watching it (regex detector, OCR off, metrics off,
    audit fsync "batch"); with `release`, clean files go to `root`/outbound. `extra` is TOML appended."""
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    watch = f'[[watch]]\npath = "{inbox}"\nquarantine_dir = "{root / "q"}"\n'
    if release:
        watch += f'release_to = "{root / "outbound"}"\n'
    config = root / "dropwarden.toml"
    config.write_text(
        f'[state]\ndir = "{root / "state"}"\n[audit]\npath = "{root / "audit.jsonl"}"\nfsync = "batch"\n'
        f'[metrics]\nlisten = ""\n[ocr]\nenabled = false\n[daemon]\nworkers = {workers}\n'
        f"{extra}\n{watch}"
    )
    return config


def start_daemon(root: Path, *, release: bool, workers: int = 2, extra: str = "") -> Daemon:
    """The real daemon on `write_config`'s configuration."""
    config = write_config(root, release=release, workers=workers, extra=extra)
    inbox, audit = root / "inbox", root / "audit.jsonl"
    log = open(root / "daemon.log", "wb")  # noqa: SIM115 - a file: an unread pipe would stall the daemon
    proc = subprocess.Popen(
        [sys.executable, "-m", "dropwarden", "run", "--config", str(config), "--log-format", "json"],
        stderr=log,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    # From the startup reconcile on: a sweep racing the first files would judge them a second time.
    while b'"reconciled"' not in (root / "daemon.log").read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("daemon did not start:\n" + (root / "daemon.log").read_text()[-2000:])
        time.sleep(0.05)
    return Daemon(proc, root, inbox, audit, release)


@dataclass
class DoneWatcher:
    """Notes when each file is done, by inotify: with `release`, when its name leaves the inbox (released
    or quarantined: IN_MOVED_FROM/IN_DELETE); without, when its decision record is in the audit log."""

    daemon: Daemon
    done_at: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self.daemon.release:
            target, mask = self.daemon.inbox, IN_MOVED_FROM | IN_DELETE
        else:
            target, mask = self.daemon.audit.parent, IN_MODIFY
        if libc.inotify_add_watch(self._fd, os.fsencode(target), mask) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        self._audit_offset = self.daemon.audit.stat().st_size if self.daemon.audit.exists() else 0
        self._partial = b""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(50):
                continue
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            now = time.monotonic()
            if self.daemon.release:
                offset = 0
                while offset < len(data):
                    _wd, _mask, _cookie, size = _EVENT.unpack_from(data, offset)
                    name = data[offset + 16 : offset + 16 + size].rstrip(b"\0").decode()
                    offset += 16 + size
                    self.done_at.setdefault(name, now)
            else:
                self._read_audit(now)

    def _read_audit(self, now: float) -> None:
        with self.daemon.audit.open("rb") as handle:
            handle.seek(self._audit_offset)
            chunk = handle.read()
        self._audit_offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if b'"type":"decision"' in line:
                self.done_at.setdefault(os.path.basename(json.loads(line)["body"]["path"]), now)

    def wait_for(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(name not in self.done_at for name in names):
            if time.monotonic() > deadline:
                missing = sum(name not in self.done_at for name in names)
                raise SystemExit(f"{missing} of {len(names)} files not done after {timeout:g} s")
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        os.close(self._fd)


def write_in_place(path: Path, body: bytes, chunk: int = 1 << 20) -> float:
    """Create, write and close `path` in place (as cp, scp or an SMB client does); the close() time."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(body)
        for start in range(0, len(view), chunk):
            os.write(fd, view[start : start + chunk])
    finally:
        os.close(fd)
    return time.monotonic()
