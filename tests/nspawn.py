"""Booting a throw-away Debian tree under systemd-nspawn for the real-systemd tests (unit, package).

The base tree (debootstrap bookworm with systemd and python3, ~300 MB) is built once per package list and
cached under $DROPWARDEN_SYSTEMD_CACHE (default /var/tmp/dropwarden-systemd-test); every boot runs an
--ephemeral copy of it in its own network namespace. systemd only ever boots over that separate tree:
booted over this machine's root it would clean the machine's /tmp and /run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import require

SUITE = "bookworm"
MIRROR = os.environ.get("DROPWARDEN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates,procps"
CACHE = Path(os.environ.get("DROPWARDEN_SYSTEMD_CACHE", "/var/tmp/dropwarden-systemd-test"))
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def opted_in() -> None:
    """Skip unless DROPWARDEN_TEST_SYSTEMD=1; then root, debootstrap and nspawn must be there."""
    if os.environ.get("DROPWARDEN_TEST_SYSTEMD", "") not in ("1", "true", "yes"):
        pytest.skip("boots systemd in a container: set DROPWARDEN_TEST_SYSTEMD=1 (root, debootstrap, nspawn)")
    require(os.geteuid() == 0, "root (systemd-nspawn)")
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        require(shutil.which(tool) is not None, tool)


def base_tree() -> Path:
    """A debootstrapped tree with systemd and python3, built once per package list and reused."""
    key = hashlib.sha256(f"{SUITE} {PACKAGES}".encode()).hexdigest()[:12]
    base = CACHE / f"{SUITE}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (base / ".complete").exists():
            return base / "root"
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir()
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(base / "root"), MIRROR],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, f"debootstrap failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        (base / "root" / "etc" / "hostname").write_text("dwtest\n")
        (base / ".complete").touch()
    return base / "root"


class Container:
    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc, self.log, self.leader = proc, log, 0

    def find_leader(self, timeout: float = 60) -> None:
        """The container's PID 1 (systemd), a child of nspawn."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"nspawn exited:\n{self.log.read_text()[-3000:]}"
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                        self.leader = int(child)
                        return
            time.sleep(0.2)
        raise AssertionError(f"no systemd in the container:\n{self.log.read_text()[-3000:]}")

    def wait_for_boot(self, timeout: float = 180) -> None:
        """Until PID 1 answers and the boot is over (`--wait` needs the manager's bus to be up)."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.sh("systemctl is-system-running --wait", check=False, timeout=timeout)
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                return
            assert state in ("", "initializing", "starting") and time.monotonic() < deadline, (
                f"boot ended {state!r}: {proc.stderr}\n{self.log.read_text()[-3000:]}"
            )
            time.sleep(0.5)

    def sh(
        self, script: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "/bin/sh", "-c", script],
            capture_output=True,
            text=True,
            env=CLEAN_ENV,
            timeout=timeout,
            input=input,
        )
        if check:
            assert proc.returncode == 0, f"{script}\n-> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def show(self, *props: str) -> dict[str, str]:
        out = self.sh("systemctl show dropwarden " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, script: str, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sh(script, check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}:\n{self.journal_text()}")

    def journal(self) -> list[dict]:
        out = self.sh("journalctl -u dropwarden -o json --no-pager").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def journal_text(self, tail: int = 5000) -> str:
        return self.sh("journalctl -u dropwarden -o cat --no-pager", check=False).stdout[-tail:]

    def events(self) -> list[dict]:
        """The daemon's own structured log lines (JSON under journald)."""
        found = []
        for entry in self.journal():
            message = entry.get("MESSAGE")
            if entry.get("_COMM") != "systemd" and isinstance(message, str) and message.startswith("{"):
                try:
                    found.append(json.loads(message))
                except ValueError:
                    pass
        return found


@contextlib.contextmanager
def booted(base: Path, log: Path, binds: dict[Path, str]) -> Iterator[Container]:
    """An ephemeral copy of `base` booted with systemd, `binds` (host path -> container path) read-only."""
    machine = f"dwtest-{os.getpid()}"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                "systemd-nspawn",
                f"--directory={base}",
                "--ephemeral",
                "--boot",
                "--register=no",  # no systemd-machined here
                "--keep-unit",  # and no systemd as this machine's PID 1 to make a scope for it
                "--private-network",
                "--console=passive",
                f"--machine={machine}",
                *(f"--bind-ro={host}:{inside}" for host, inside in binds.items()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    box = Container(proc, log)
    try:
        box.find_leader()
        box.wait_for_boot()
        yield box
    finally:
        if box.leader and proc.poll() is None:
            box.sh("systemctl poweroff", check=False, timeout=30)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # nspawn powers the container off
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
