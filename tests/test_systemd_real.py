"""The packaged unit under a real systemd: boot a Debian tree in systemd-nspawn, install dropwarden as the
README says, then start, drop files, reload, trip the watchdog, stop, and check systemctl and the journal.

Opt in with DROPWARDEN_TEST_SYSTEMD=1. It needs root, `debootstrap` and `systemd-nspawn` (Debian package
systemd-container), and the Debian mirror once: the base tree (~300 MB) is cached under
$DROPWARDEN_SYSTEMD_CACHE (default /var/tmp/dropwarden-systemd-test) and every run boots a throw-away
copy of it (--ephemeral), with its own network namespace. systemd only ever boots over that separate
tree: booted over this machine's root it would clean the machine's /tmp and /run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, require
from .nspawn import Container, base_tree, booted, opted_in

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


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
    opted_in()
    require(sys.version_info[:2] == (3, 11), "Python 3.11 (wheels are built for the tree's python3.11)")


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


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    _opted_in()
    base = base_tree()
    wheels = _wheels(tmp_path)
    (tmp_path / "dropwarden.toml").write_text(CONFIG)
    binds = {
        wheels: "/mnt/wheels",
        REPO / "packaging" / "systemd": "/mnt/systemd",
        tmp_path / "dropwarden.toml": "/mnt/dropwarden.toml",
    }
    with booted(base, tmp_path / "nspawn.log", binds) as box:
        yield box


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
