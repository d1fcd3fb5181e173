"""The Debian package: `make deb` builds it lintian-clean, and installed with apt into a booted Debian tree it
waits for a watch, then judges files, reloads and stops under systemd; a purge leaves the audit log.

Opt in with DROPWARDEN_TEST_SYSTEMD=1 (root, debootstrap, systemd-nspawn, dpkg-deb, lintian; see
tests/nspawn.py for the cached tree). The package is built with this machine's /usr/bin/python3, which
must be the tree's (bookworm: 3.11); the built .deb is cached per source hash next to the tree.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, require
from .nspawn import CACHE, CLEAN_ENV, Container, base_tree, booted, opted_in

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SYSTEM_PYTHON = Path("/usr/bin/python3.11")  # bookworm's, as in the booted tree
# What goes into the package: everything but the tests and benchmarks.
PACKAGED = re.compile(r"^(?!tests/|bench/)")
SECRET_MAIL = "hanako@example.jp"


def _source_key() -> str:
    """A hash of the files the package is built from, and of the interpreter it is built with."""
    names = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    digest = hashlib.sha256(os.readlink("/usr/bin/python3").encode())
    for name in sorted(n for n in names if n and PACKAGED.match(os.fsdecode(n))):
        path = REPO / os.fsdecode(name)
        if path.is_file():
            digest.update(name + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def deb() -> Path:
    """The package built by `make deb`'s script from this tree, once per source hash."""
    opted_in()
    require(shutil.which("dpkg-deb") is not None, "dpkg-deb")
    require(SYSTEM_PYTHON.exists(), f"{SYSTEM_PYTHON} (the booted tree's interpreter)")
    out = CACHE / f"deb-{_source_key()}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".deb-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not list(out.glob("dropwarden_*.deb")):
            for old in CACHE.glob("deb-*"):
                shutil.rmtree(old)
            proc = subprocess.run(
                ["/usr/bin/python3", str(REPO / "packaging/deb/build.py"), "--out", str(out)],
                capture_output=True,
                text=True,
                timeout=600,
                env=CLEAN_ENV,  # the system interpreter, none of this test's virtualenv
            )
            assert proc.returncode == 0, f"build failed:\n{proc.stdout}\n{proc.stderr[-5000:]}"
    [built] = out.glob("dropwarden_*.deb")
    return built


def _field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
    ).stdout


def test_the_package_holds_the_service_and_is_lintian_clean(deb: Path):
    version = _field(deb, "Version").strip()
    assert deb.name == f"dropwarden_{version}_amd64.deb"
    assert "python3.11" in _field(deb, "Depends")
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    for path in (
        "./opt/dropwarden/bin/dropwarden",
        "./opt/dropwarden/pyvenv.cfg",
        "./usr/bin/dropwarden -> /opt/dropwarden/bin/dropwarden",
        "./opt/dropwarden/bin/python3 -> /usr/bin/python3.11",
        "./lib/systemd/system/dropwarden.service",
        "./usr/lib/sysusers.d/dropwarden.conf",
        "./usr/lib/tmpfiles.d/dropwarden.conf",
        "./etc/logrotate.d/dropwarden",
        "./etc/dropwarden/dropwarden.toml",
        "./usr/share/man/man1/dropwarden.1.gz",
        "./usr/share/bash-completion/completions/dropwarden",
        "./usr/share/zsh/vendor-completions/_dropwarden",
        "./usr/share/doc/dropwarden/copyright",
    ):
        assert path in listing, f"{path} not in the package"
    control = subprocess.run(
        ["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True
    ).stdout  # a tar: conffiles is in there as text
    assert b"/etc/dropwarden/dropwarden.toml\n/etc/logrotate.d/dropwarden\n" in control

    # Every tag lintian still reports is overridden, with its reason, in packaging/deb/lintian-overrides.
    require(shutil.which("lintian") is not None, "lintian")
    lint = subprocess.run(
        ["lintian", "--fail-on", "error,warning", "--tag-display-limit", "0", str(deb)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    tags = [line for line in lint.stdout.splitlines() if re.match(r"^[EWI]: ", line)]
    assert lint.returncode == 0 and not tags, lint.stdout[-5000:] + lint.stderr[-2000:]


def _judged(box: Container) -> dict[str, str]:
    records = [json.loads(line) for line in box.sh("cat /var/log/dropwarden/audit.jsonl").stdout.splitlines()]
    return {Path(r["body"]["path"]).name: r["body"]["outcome"] for r in records if r["type"] == "decision"}


def test_apt_install_configure_run_reload_upgrade_stop_purge(deb: Path, tmp_path: Path):
    with booted(base_tree(), tmp_path / "nspawn.log", {deb.parent: "/mnt/deb"}) as box:
        # The operator's install. Recommends (Tesseract) need the network, which the container has not.
        box.sh(f"apt-get install -y -q --no-install-recommends /mnt/deb/{deb.name}", timeout=300)
        assert box.sh("id -un dropwarden && getent group dropwarden-drop", check=False).returncode == 0
        assert box.sh("stat -c '%U %a' /srv/drop/inbox").stdout.split() == ["dropwarden", "3770"]
        assert box.sh("dropwarden --version").stdout.startswith("dropwarden")
        # Enabled, but not started: the shipped configuration has no watch yet.
        assert box.sh("systemctl is-enabled dropwarden").stdout.strip() == "enabled"
        assert box.show("ActiveState", "NRestarts") == {"ActiveState": "inactive", "NRestarts": "0"}

        box.sh(
            "dropwarden config init --force --watch /srv/drop/inbox --release-to /srv/drop/outbound"
            " --quarantine-dir /srv/drop/.quarantine && systemctl start dropwarden"
        )
        props = box.show("ActiveState", "SubState", "MainPID", "User")
        assert props["ActiveState"] == "active" and props["User"] == "dropwarden", box.journal_text()
        pid = props["MainPID"]

        box.sh("useradd -G dropwarden-drop alice")
        box.sh(
            "runuser -u alice -- sh -c 'umask 022; cat > /srv/drop/inbox/card.txt'", input=f"{SECRET_MAIL}\n"
        )
        box.sh("runuser -u alice -- sh -c 'umask 022; echo nothing here > /srv/drop/inbox/clean.txt'")
        box.wait_for("test -e /srv/drop/outbound/clean.txt", "clean.txt released")
        box.wait_for("ls /srv/drop/.quarantine/*.json", "card.txt quarantined")
        assert _judged(box) == {"clean.txt": "clean", "card.txt": "finding"}

        box.sh("systemctl reload dropwarden")
        box.wait_for("journalctl -u dropwarden -o cat | grep -q 'configuration reloaded'", "the reload")
        assert box.show("ActiveState", "MainPID") == {"ActiveState": "active", "MainPID": pid}

        # An upgrade (here: the same package again) stops the daemon before replacing its files and starts
        # it again afterwards.
        box.sh(f"apt-get install -y -q --reinstall --no-install-recommends /mnt/deb/{deb.name}", timeout=300)
        props = box.show("ActiveState", "MainPID")
        assert props["ActiveState"] == "active" and props["MainPID"] != pid, box.journal_text()

        box.sh("systemctl stop dropwarden")
        assert box.show("ActiveState", "Result", "ExecMainStatus") == {
            "ActiveState": "inactive",
            "Result": "success",
            "ExecMainStatus": "0",
        }
        box.sh("dropwarden audit verify /var/log/dropwarden/audit.jsonl")

        # Purge: the package, its configuration and its unit go; the audit log (and the keys in
        # /var/lib/dropwarden that verify it) stay.
        box.sh("apt-get purge -y -q dropwarden", timeout=300)
        for gone in (
            "/opt/dropwarden",
            "/usr/bin/dropwarden",
            "/etc/dropwarden",
            "/lib/systemd/system/dropwarden.service",
        ):
            assert box.sh(f"test -e {gone} || test -L {gone}", check=False).returncode != 0, f"{gone} remains"
        assert "not-found" in box.sh("systemctl show -p LoadState dropwarden").stdout
        assert box.sh("grep -c '\"decision\"' /var/log/dropwarden/audit.jsonl").stdout.strip() == "2"
        assert box.sh("test -d /var/lib/dropwarden", check=False).returncode == 0
        leaks = box.sh(f"grep -rl {SECRET_MAIL} /var/log/dropwarden || true").stdout
        assert not leaks.strip(), leaks
