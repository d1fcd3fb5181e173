"""The packaged unit under a real systemd: boot a Debian tree in systemd-nspawn, install dropwarden as the
README says, then start, drop files, reload, trip the watchdog, stop, and check systemctl and the journal.

Opt in with DROPWARDEN_TEST_SYSTEMD=1. It needs root, `debootstrap` and `systemd-nspawn` (Debian package
systemd-container), and the Debian mirror once: the base tree (~300 MB) is cached under
$DROPWARDEN_SYSTEMD_CACHE (default /var/tmp/dropwarden-systemd-test) and every run boots a throw-away
copy of it (--ephemeral), with its own network namespace. systemd only ever boots over that separate
tree: booted over this machine's root it would clean the machine's /tmp and /run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, require

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SUITE = "bookworm"
MIRROR = os.environ.get("DROPWARDEN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates,procps"
CACHE = Path(os.environ.get("DROPWARDEN_SYSTEMD_CACHE", "/var/tmp/dropwarden-systemd-test"))
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

CONFIG = """\
[[watch]]
path = "/srv/drop/inbox"
name = "inbox"
on_finding = ["quarantine", "alert"]
on_unscanned = ["quarantine"]
release_to = "/srv/drop/outbound"
quarantine_dir = "/srv/drop/.quarantine"

[[alerts.sink]]
type = "jsonl"
name = "file"
path = "/var/log/dropwarden/alerts.jsonl"
"""

# The README's "Installing as a service", into a venv under /opt.
INSTALL = """\
set -eu
python3 -m venv /opt/dropwarden
/opt/dropwarden/bin/pip install --quiet --no-index --find-links /mnt/wheels dropwarden
install -m 0644 /mnt/systemd/dropwarden.service /etc/systemd/system/dropwarden.service
install -D -m 0644 /mnt/systemd/dropwarden.sysusers /etc/sysusers.d/dropwarden.conf
install -D -m 0644 /mnt/systemd/dropwarden.tmpfiles /etc/tmpfiles.d/dropwarden.conf
systemd-sysusers
systemd-tmpfiles --create dropwarden.conf
mkdir -p /etc/systemd/system/dropwarden.service.d
cat > /etc/systemd/system/dropwarden.service.d/venv.conf <<'EOF'
[Service]
ExecStart=
ExecStart=/opt/dropwarden/bin/dropwarden run --config /etc/dropwarden/dropwarden.toml
ExecReload=
ExecReload=/opt/dropwarden/bin/dropwarden config check --config /etc/dropwarden/dropwarden.toml
ExecReload=/bin/kill -HUP $MAINPID
EOF
install -m 0644 /mnt/dropwarden.toml /etc/dropwarden/dropwarden.toml
systemctl daemon-reload
systemctl enable --now dropwarden
"""

SECRET_PHONE, SECRET_MAIL = "090-1234-5678", "taro@example.jp"


def _opted_in() -> None:
    if os.environ.get("DROPWARDEN_TEST_SYSTEMD", "") not in ("1", "true", "yes"):
        pytest.skip("boots systemd in a container: set DROPWARDEN_TEST_SYSTEMD=1 (root, debootstrap, nspawn)")
    require(os.geteuid() == 0, "root (systemd-nspawn)")
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        require(shutil.which(tool) is not None, tool)
    require(sys.version_info[:2] == (3, 11), "Python 3.11 (wheels are built for the tree's python3.11)")


def _base_tree() -> Path:
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


def _wheels(tmp_path: Path) -> Path:
    """Wheels of this working tree (tracked and new files) and its dependencies, for an offline install."""
    src, wheels = tmp_path / "src", tmp_path / "wheels"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        target = src / os.fsdecode(name)
        if (REPO / os.fsdecode(name)).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / os.fsdecode(name), target)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(src)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return wheels


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


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    _opted_in()
    base = _base_tree()
    wheels = _wheels(tmp_path)
    (tmp_path / "dropwarden.toml").write_text(CONFIG)
    log = tmp_path / "nspawn.log"
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
                f"--bind-ro={wheels}:/mnt/wheels",
                f"--bind-ro={REPO / 'packaging' / 'systemd'}:/mnt/systemd",
                f"--bind-ro={tmp_path / 'dropwarden.toml'}:/mnt/dropwarden.toml",
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


def test_the_unit_under_a_real_systemd(container: Container):
    box = container

    # Install and start as an operator would; `enable --now` returns once the daemon said READY=1.
    box.sh(INSTALL, timeout=600)
    props = box.show("ActiveState", "SubState", "MainPID", "StatusText", "WatchdogUSec", "NRestarts", "User")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), box.journal_text()
    assert props["WatchdogUSec"] == "30s" and props["User"] == "dropwarden"
    assert props["StatusText"], "no STATUS= from the daemon"
    pid = props["MainPID"]

    # The sandbox is in force on the running daemon.
    status = box.sh(f"cat /proc/{pid}/status").stdout
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    assert re.search(r"^Seccomp:\s+2$", status, re.M)
    assert re.search(r"^CapEff:\s+0+$", status, re.M)
    assert box.sh(f"stat -c %U /proc/{pid}").stdout.strip() == "dropwarden"
    exposure = re.search(
        r"Overall exposure level for \S+: (\d+\.\d+)",
        box.sh("SYSTEMD_COLORS=0 systemd-analyze security --no-pager dropwarden").stdout,
    )
    assert exposure and float(exposure.group(1)) <= 2.0
    health = box.sh(
        "python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:9468/healthz\").read().decode())'"
    ).stdout
    assert json.loads(health)["status"] == "ok"

    # Uploaders in dropwarden-drop can drop files; anyone else cannot.
    box.sh("useradd -G dropwarden-drop alice && useradd mallory")
    # (the content goes through stdin: a command line would land in the journal as _CMDLINE)
    box.sh(
        "runuser -u alice -- sh -c 'umask 022; cat > /srv/drop/inbox/memo.txt'",
        input=f"call me on {SECRET_PHONE}, {SECRET_MAIL}\n",
    )
    box.sh("runuser -u alice -- sh -c 'umask 022; echo nothing here > /srv/drop/inbox/notes.txt'")
    assert box.sh("runuser -u mallory -- sh -c 'echo x > /srv/drop/inbox/m.txt'", check=False).returncode != 0
    box.wait_for("test -e /srv/drop/outbound/notes.txt", "notes.txt released")
    box.wait_for("ls /srv/drop/.quarantine/*.json", "memo.txt quarantined")
    box.wait_for('test -z "$(ls -A /srv/drop/inbox)"', "an empty inbox")
    # Every decision is in the audit log; the journal carries those that need a look (not clean ones).
    audited = [json.loads(line) for line in box.sh("cat /var/log/dropwarden/audit.jsonl").stdout.splitlines()]
    decided = {Path(r["body"]["path"]).name: r["body"]["outcome"] for r in audited if r["type"] == "decision"}
    assert decided == {"notes.txt": "clean", "memo.txt": "finding"}
    judged = {Path(e["path"]).name: e for e in box.events() if e.get("event") == "judged"}
    assert "notes.txt" not in judged
    assert judged["memo.txt"]["outcome"] == "finding"
    assert {"EMAIL", "PHONE"} <= set(judged["memo.txt"]["types"])
    for where in (
        "journalctl --no-pager -o json",
        "cat /var/log/dropwarden/*.jsonl /srv/drop/.quarantine/*.json",
    ):
        leaks = [
            line for line in box.sh(where).stdout.splitlines() if SECRET_PHONE in line or SECRET_MAIL in line
        ]
        assert not leaks, f"{where}: {leaks}"

    # Reload: a good configuration is taken (same process); a bad one makes `systemctl reload` fail and
    # leaves the daemon running on the old one.
    box.sh("systemctl reload dropwarden")
    assert box.show("MainPID")["MainPID"] == pid
    box.wait_for("journalctl -u dropwarden -o cat | grep -q 'configuration reloaded'", "the reload")
    bad = box.sh(
        "cp /etc/dropwarden/dropwarden.toml /root/good.toml && echo '[bogus]' >> /etc/dropwarden/dropwarden.toml"
        " && systemctl reload dropwarden",
        check=False,
    )
    box.sh("cp /root/good.toml /etc/dropwarden/dropwarden.toml")
    assert bad.returncode != 0
    assert box.show("ActiveState", "MainPID") == {"ActiveState": "active", "MainPID": pid}

    # Watchdog: a frozen daemon stops pinging; systemd aborts it (the fault handler dumps every thread's
    # stack into the journal) and restarts it. WatchdogSec is shortened for the test.
    box.sh(
        "mkdir -p /run/systemd/system/dropwarden.service.d && printf '[Service]\\nWatchdogSec=3\\n'"
        " > /run/systemd/system/dropwarden.service.d/fast-watchdog.conf"
        " && systemctl daemon-reload && systemctl restart dropwarden"
    )
    frozen = box.show("MainPID")["MainPID"]
    box.sh(f"kill -STOP {frozen}")
    box.wait_for(
        f'test "$(systemctl show -p MainPID --value dropwarden)" != {frozen}'
        " && systemctl is-active -q dropwarden",
        "a restart after the watchdog fired",
        timeout=90,
    )
    assert int(box.show("NRestarts")["NRestarts"]) >= 1
    text = box.journal_text(tail=10**7)
    assert "Watchdog timeout" in text
    assert "Fatal Python error: Aborted" in text

    # Stop: SIGTERM, drain, exit 0, well within TimeoutStopSec.
    started = time.monotonic()
    box.sh("systemctl stop dropwarden")
    assert time.monotonic() - started < 30
    props = box.show("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert props == {
        "ActiveState": "inactive",
        "Result": "success",
        "ExecMainCode": "1",
        "ExecMainStatus": "0",
    }
    assert any(e.get("event") == "stopped" for e in box.events())

    # The audit log written under the sandbox verifies.
    box.sh(
        "/opt/dropwarden/bin/dropwarden audit verify --config /etc/dropwarden/dropwarden.toml"
        " /var/log/dropwarden/audit.jsonl"
    )
