"""systemd packaging: the unit, its GPU drop-in, tmpfiles.d and sysusers.d, checked by systemd's own tools.

`systemd-analyze verify` logs most mistakes (an unknown key, a value it cannot parse) as "..., ignoring"
and, in its default mode, still exits 0; systemd 252 exits 1 for them only when --recursive-errors= is
given. So a unit counts as accepted only when verify exits 0 AND says nothing about our files.
sysusers and tmpfiles are applied to a temporary root (`--root`), never to this machine.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import REPO, require

SYSTEMD = REPO / "packaging" / "systemd"
UNIT = SYSTEMD / "dropwarden.service"
GPU_DROPIN = SYSTEMD / "dropwarden.service.d" / "gpu.conf.example"
TMPFILES = SYSTEMD / "dropwarden.tmpfiles"
SYSUSERS = SYSTEMD / "dropwarden.sysusers"
DEFAULT_CONFIG = REPO / "etc" / "dropwarden" / "dropwarden.toml"
INSTALLED_BINARY = "/usr/bin/dropwarden"


def tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/bin/{name}") if os.access(p, os.X_OK)), None
    )
    require(path is not None, f"{name} (Debian package systemd)")
    assert path is not None
    return path


def dropwarden_script() -> str:
    """The dropwarden console script of the environment running the tests (verify wants ExecStart to exist)."""
    script = Path(sys.executable).parent / "dropwarden"
    found = str(script) if os.access(script, os.X_OK) else shutil.which("dropwarden")
    require(found is not None, "the dropwarden console script (pip install -e .)")
    assert found is not None
    return found


def directives(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order; repeated keys kept (ExecReload= twice)."""
    section, out = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(path: Path, section: str, key: str) -> list[str]:
    return [v for s, k, v in directives(path) if (s, k) == (section, key)]


def value(path: Path, section: str, key: str) -> str:
    found = values(path, section, key)
    assert found, f"{path.name}: [{section}] {key}= missing"
    return found[-1]


def seconds(text: str) -> float:
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "ms": 0.001, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text):
        total += float(number) * units[unit]
    return total


# --- systemd-analyze verify -------------------------------------------------------------------


def stage_unit(tmp_path: Path, unit_text: str, dropin_text: str | None = None) -> Path:
    """The unit in tmp_path, its /usr/bin/dropwarden replaced by an existing script; with a drop-in."""
    path = tmp_path / "dropwarden.service"
    path.write_text(unit_text.replace(INSTALLED_BINARY, dropwarden_script()))
    if dropin_text is not None:
        dropins = tmp_path / "dropwarden.service.d"
        dropins.mkdir()
        (dropins / "gpu.conf").write_text(dropin_text)
    return path


def verify(unit: Path) -> tuple[int, list[str]]:
    """Exit status and whatever systemd-analyze said about our unit or its drop-ins."""
    proc = subprocess.run(
        [
            tool("systemd-analyze"),
            "verify",
            "--man=no",
            "--generators=no",
            "--recursive-errors=no",
            str(unit),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""},
    )
    said = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if str(unit.parent) in line or "dropwarden" in line
    ]
    return proc.returncode, said


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    code, said = verify(stage_unit(tmp_path, UNIT.read_text()))
    assert (code, said) == (0, [])


def test_systemd_analyze_verify_accepts_the_unit_with_the_gpu_dropin(tmp_path):
    code, said = verify(stage_unit(tmp_path, UNIT.read_text(), GPU_DROPIN.read_text()))
    assert (code, said) == (0, [])


BROKEN_UNITS = {
    "bad value": ("ProtectSystem=strict", "ProtectSystem=bogus"),
    "misspelt key": ("NoNewPrivileges=yes", "NoNewPrivilege=yes"),
    "misspelt section": ("[Service]", "[Servce]"),
    "unknown syscall group": ("SystemCallFilter=@system-service", "SystemCallFilter=@sytem-service"),
    "unknown address family": ("RestrictAddressFamilies=AF_UNIX", "RestrictAddressFamilies=AF_UNIKS"),
    "bad type": ("Type=notify", "Type=notfy"),
}


@pytest.mark.parametrize("old,new", BROKEN_UNITS.values(), ids=BROKEN_UNITS.keys())
def test_verify_rejects_a_broken_unit(tmp_path, old, new):
    broken, count = re.subn(rf"^{re.escape(old)}", new, UNIT.read_text(), count=1, flags=re.M)
    assert count == 1, f"no line starts with {old}"
    code, said = verify(stage_unit(tmp_path, broken))
    assert code != 0 or said, "systemd-analyze verify did not notice"


def test_verify_rejects_a_missing_binary(tmp_path):
    path = tmp_path / "dropwarden.service"
    path.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(tmp_path / "no-such-dropwarden")))
    code, said = verify(path)
    assert code != 0 and any("not executable" in line for line in said)


def test_verify_rejects_a_broken_gpu_dropin(tmp_path):
    dropin = re.sub(r"^PrivateDevices=no", "PrivateDevices=maybe", GPU_DROPIN.read_text(), flags=re.M)
    assert "PrivateDevices=maybe" in dropin
    code, said = verify(stage_unit(tmp_path, UNIT.read_text(), dropin))
    assert code != 0 or said


def test_offline_security_review_stays_low(tmp_path):
    """systemd's own exposure score (0 best, 10 worst); the hardened unit is at about 1.5."""
    unit = stage_unit(tmp_path, UNIT.read_text())
    proc = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0"},
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.0, proc.stdout


# --- what the unit must say -------------------------------------------------------------------


def test_the_unit_is_a_watched_notify_service():
    assert value(UNIT, "Service", "Type") == "notify"
    assert value(UNIT, "Service", "NotifyAccess") == "main"
    assert values(UNIT, "Service", "ExecStart") == [
        f"{INSTALLED_BINARY} run --config /etc/dropwarden/dropwarden.toml"
    ]
    assert values(UNIT, "Service", "ExecReload")[-1] == "/bin/kill -HUP $MAINPID"
    assert value(UNIT, "Service", "WatchdogSec") == "30"
    assert value(UNIT, "Service", "Restart") == "on-failure"
    assert value(UNIT, "Service", "User") == value(UNIT, "Service", "Group") == "dropwarden"
    assert value(UNIT, "Service", "UMask") == "0077"
    assert value(UNIT, "Install", "WantedBy") == "multi-user.target"


def test_stop_timeout_covers_the_drain():
    drain = tomllib.loads(DEFAULT_CONFIG.read_text())["daemon"]["drain_timeout"]
    assert seconds(value(UNIT, "Service", "TimeoutStopSec")) >= drain + 15


def test_the_default_paths_are_writable_in_the_sandbox():
    """State and audit paths of the default configuration lie in the directories systemd makes writable."""
    config = tomllib.loads(DEFAULT_CONFIG.read_text())
    assert value(UNIT, "Service", "ProtectSystem") == "strict"
    state_dir = Path("/var/lib") / value(UNIT, "Service", "StateDirectory")
    logs_dir = Path("/var/log") / value(UNIT, "Service", "LogsDirectory")
    assert Path(config["state"]["dir"]) == state_dir
    assert Path(config["audit"]["path"]).parent == logs_dir
    assert value(UNIT, "Service", "ConfigurationDirectory") == "dropwarden"
    writable = " ".join(values(UNIT, "Service", "ReadWritePaths")).split()
    assert "/srv/drop" in writable


def test_the_sandbox_is_on():
    expected = {
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectHome": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
    }
    assert {key: value(UNIT, "Service", key) for key in expected} == expected
    assert "@system-service" in values(UNIT, "Service", "SystemCallFilter")
    families = set(value(UNIT, "Service", "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_the_metrics_port_needs_only_inet_on_loopback():
    listen = tomllib.loads(DEFAULT_CONFIG.read_text())["metrics"]["listen"]
    assert listen.startswith("127.0.0.1:")
    assert "AF_INET" in value(UNIT, "Service", "RestrictAddressFamilies").split()


def test_the_gpu_dropin_opens_the_nvidia_devices_and_nothing_else():
    assert value(GPU_DROPIN, "Service", "PrivateDevices") == "no"
    assert value(GPU_DROPIN, "Service", "DevicePolicy") == "closed"
    allowed = {v.split()[0]: v.split()[1] for v in values(GPU_DROPIN, "Service", "DeviceAllow")}
    assert allowed == {
        "/dev/nvidia0": "rw",
        "/dev/nvidiactl": "rw",
        "/dev/nvidia-uvm": "rw",
        "/dev/nvidia-uvm-tools": "rw",
    }
    assert value(GPU_DROPIN, "Service", "MemoryDenyWriteExecute") == "no"


# --- sysusers.d and tmpfiles.d, applied to a temporary root -----------------------------------


def sysusers(root: Path, conf: Path) -> subprocess.CompletedProcess:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    # With --root, a configuration path is read as given (absolute), users land in root/etc.
    return subprocess.run(
        [tool("systemd-sysusers"), f"--root={root}", str(conf.resolve())],
        capture_output=True,
        text=True,
        timeout=60,
    )


def tmpfiles(root: Path, conf: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("systemd-tmpfiles"), "--create", f"--root={root}", str(conf.resolve())],
        capture_output=True,
        text=True,
        timeout=60,
    )


def database(path: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines() if line}


def test_sysusers_creates_a_system_account_without_login(tmp_path):
    proc = sysusers(tmp_path, SYSUSERS)
    assert proc.returncode == 0, proc.stderr
    passwd, group = database(tmp_path / "etc/passwd"), database(tmp_path / "etc/group")
    _name, _, uid, gid, _gecos, home, shell = passwd["dropwarden"]
    assert int(uid) < 1000 and group["dropwarden"][2] == gid
    assert home == "/var/lib/dropwarden"
    assert shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
    assert "dropwarden-drop" in group
    assert database(tmp_path / "etc/shadow")["dropwarden"][1].startswith("!")  # locked


def test_sysusers_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "broken.conf"
    broken.write_text(SYSUSERS.read_text() + "x nonsense\n")
    proc = sysusers(tmp_path / "root", broken)
    assert proc.returncode != 0 and "broken.conf" in proc.stderr


def root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles sets owners: needs root")


def test_tmpfiles_lays_out_state_logs_config_and_the_drop_area(tmp_path):
    root_only()
    assert sysusers(tmp_path, SYSUSERS).returncode == 0
    proc = tmpfiles(tmp_path, TMPFILES)
    assert proc.returncode == 0, proc.stderr
    passwd, group = database(tmp_path / "etc/passwd"), database(tmp_path / "etc/group")
    dw_uid, dw_gid = int(passwd["dropwarden"][2]), int(group["dropwarden"][2])
    drop_gid = int(group["dropwarden-drop"][2])
    expected = {
        "var/lib/dropwarden": (0o750, dw_uid, dw_gid),
        "var/log/dropwarden": (0o750, dw_uid, dw_gid),
        "etc/dropwarden": (0o755, 0, 0),
        "etc/dropwarden/dropwarden.d": (0o755, 0, 0),
        "srv/drop": (0o755, 0, 0),
        "srv/drop/inbox": (0o3770, dw_uid, drop_gid),
        "srv/drop/outbound": (0o750, dw_uid, dw_gid),
        "srv/drop/.quarantine": (0o700, dw_uid, dw_gid),
    }
    found = {}
    for rel in expected:
        st = os.lstat(tmp_path / rel)
        assert stat.S_ISDIR(st.st_mode), rel
        found[rel] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    assert found == expected
    # Applying again changes nothing and fails nothing (packages run it on every upgrade).
    assert tmpfiles(tmp_path, TMPFILES).returncode == 0


def test_tmpfiles_fails_on_an_unknown_owner(tmp_path):
    """Order matters: tmpfiles before sysusers (or a typo in a name) is an error, not a root-owned dir."""
    root_only()
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group"):
        (tmp_path / "etc" / name).write_text(f"root:x:0:{'0::/root:/bin/sh' if name == 'passwd' else ''}\n")
    proc = tmpfiles(tmp_path, TMPFILES)
    assert proc.returncode != 0 and "dropwarden" in proc.stderr
