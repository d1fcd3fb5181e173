"""`dropwarden doctor`: the core's checks on real folders, and a third-party plugin's checks beside them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from dropwarden.commands.doctor import count_directories, inotify_check, network_check
from dropwarden.config import WatchSettings

from .conftest import install_plugins, require, run_cli

QUIET = "[ocr]\nenabled = false\n"  # no Tesseract run: these tests are about the core's checks


def _watch(path: Path, extra: str = "") -> str:
    return f'[[watch]]\nname = "inbox"\npath = "{path}"\n{extra}'


def _doctor(write_config, body: str, *args: str, env: dict[str, str] | None = None):
    return run_cli("doctor", "--config", str(write_config(QUIET + body)), *args, env=env)


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A small tmpfs: another file system than tmp_path's."""
    require(os.geteuid() == 0, "root (to mount a tmpfs)")
    mount_point = tmp_path / "other-fs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_sound_configuration_passes_with_one_line_per_check(tmp_path, write_config):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sink = tmp_path / "log" / "alerts.jsonl"
    body = (
        _watch(inbox, f'release_to = "{tmp_path / "out"}"\n')
        + f'[[alerts.sink]]\ntype = "jsonl"\npath = "{sink}"\n'
    )
    result = _doctor(write_config, body)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith(("ok    ", "warn  ")) for line in lines), lines
    names = [line[6:].split(": ", 1)[0] for line in lines]
    for expected in (
        "watch inbox",
        "watch inbox quarantine",
        "watch inbox release_to",
        "inotify",
        "state",
        "audit log",
        "audit key",
        f"alert sink jsonl:{sink}",
        "ocr",
        "vision",
        "regex engine",
        "regex offsets",
    ):
        assert expected in names, names
    report = json.loads(_doctor(write_config, body, "--format", "json").stdout)
    assert report["ok"] is True
    by_name = {check["name"]: check for check in report["checks"]}
    assert by_name["inotify"]["status"] == "ok" and "max_user_watches" in by_name["inotify"]["detail"]
    assert by_name["regex engine"]["detail"].startswith("hyperscan, ")
    assert by_name["regex offsets"] == {
        "name": "regex offsets",
        "status": "ok",
        "detail": "counted in C (dropwarden_regex._textpos)",
    }


def test_a_quarantine_or_release_folder_on_another_file_system_fails(tmp_path, tmpfs, write_config):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    result = _doctor(write_config, _watch(inbox, f'quarantine_dir = "{tmpfs / "q"}"\n'))
    assert result.returncode == 1, result.stdout
    assert (
        f"FAIL  watch inbox quarantine: {tmpfs / 'q'} is on another file system than {inbox}" in result.stdout
    )
    result = _doctor(write_config, _watch(inbox, f'release_to = "{tmpfs}"\n'))
    assert result.returncode == 1, result.stdout
    assert f"FAIL  watch inbox release_to: {tmpfs} is on another file system than {inbox}" in result.stdout
    assert "ok    watch inbox quarantine: " in result.stdout


def test_a_watch_the_daemon_could_not_write_or_that_is_missing_fails(tmp_path, write_config):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    missing = _doctor(write_config, _watch(tmp_path / "nowhere"))
    assert missing.returncode == 1
    assert f"FAIL  watch inbox: {tmp_path / 'nowhere'}: No such file or directory" in missing.stdout
    subprocess.run(["mount", "--bind", "-o", "ro", str(inbox), str(inbox)], check=False)
    try:
        require(os.geteuid() == 0 and not os.access(inbox, os.W_OK), "a read-only bind mount (root)")
        result = _doctor(write_config, _watch(inbox))
    finally:
        subprocess.run(["umount", str(inbox)], check=False)
    assert result.returncode == 1, result.stdout
    assert f"FAIL  watch inbox: {inbox} is not writable by this process" in result.stdout
    left_alone = _doctor(write_config, _watch(inbox, 'on_finding = "leave"\non_unscanned = "leave"\n'))
    assert "ok    watch inbox: " in left_alone.stdout


def test_state_audit_and_sink_paths_that_cannot_be_created_fail(tmp_path, write_config):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    body = f'[[alerts.sink]]\ntype = "jsonl"\nname = "siem"\npath = "{blocker / "alerts.jsonl"}"\n'
    result = _doctor(write_config, body)
    assert result.returncode == 1
    assert (
        f"FAIL  alert sink siem: {blocker / 'alerts.jsonl'} cannot be created: {blocker} is not a directory"
        in (result.stdout)
    )
    assert "ok    state: " in result.stdout and "ok    audit log: " in result.stdout


def test_an_exec_sink_whose_program_cannot_run_fails(tmp_path, write_config):
    script = tmp_path / "notify.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    body = f'[[alerts.sink]]\ntype = "exec"\nname = "ticket"\nargv = ["{script}"]\n'
    not_executable = _doctor(write_config, body)
    assert not_executable.returncode == 1
    assert f"FAIL  alert sink ticket: {script} is not executable" in not_executable.stdout
    script.chmod(0o755)
    runnable = _doctor(write_config, body)
    assert f"ok    alert sink ticket: {script} is executable" in runnable.stdout
    missing = _doctor(write_config, body.replace("notify.sh", "gone.sh"))
    assert f"FAIL  alert sink ticket: {tmp_path / 'gone.sh'} is not a file" in missing.stdout


def test_directories_are_counted_up_to_just_past_the_limit(tmp_path):
    root = tmp_path / "tree"
    for leaf in ("a/b/c", "a/d", "e"):
        (root / leaf).mkdir(parents=True)
    (root / "a" / "file.txt").write_text("not a directory")
    (root / "link").symlink_to(root / "a", target_is_directory=True)
    assert count_directories(root, 100) == 6  # root, a, a/b, a/b/c, a/d, e; the link not followed
    assert count_directories(root, 3) == 4  # stops once past the limit
    assert count_directories(root, 100, recursive=False) == 1


def test_inotify_watches_against_max_user_watches(tmp_path):
    root = tmp_path / "tree"
    for leaf in ("a/b/c", "a/d", "e"):
        (root / leaf).mkdir(parents=True)
    watches = [WatchSettings(path=root), WatchSettings(path=root, recursive=False)]  # 6 + 1 directories
    assert inotify_check(watches, 1000).status == "ok"
    assert "7 directories to watch, max_user_watches = 1000" in inotify_check(watches, 1000).detail
    assert inotify_check(watches, 8).status == "warn"
    too_few = inotify_check(watches, 6)
    assert too_few.status == "fail" and "max_user_watches = 6" in too_few.detail
    polled = [WatchSettings(path=root, observer="polling")]
    assert inotify_check(polled, 1).status == "ok"


ACME_CHECKS = '''
"""A third-party plugin with its own doctor checks."""
from dropwarden.hookspecs import Check, hookimpl


@hookimpl
def dropwarden_doctor_checks(settings):
    yield Check("acme licence", "ok", "valid until 2099")
    yield Check("acme scanner", "fail", "scanner daemon not reachable")
'''

ACME_RAISES = '''
"""A third-party plugin whose checks raise half way."""
from dropwarden.hookspecs import Check, hookimpl


@hookimpl
def dropwarden_doctor_checks(settings):
    yield Check("acme-raises first", "warn", "before the error")
    raise RuntimeError("boom")
'''


def test_a_third_party_plugins_checks_appear_and_decide_the_exit_status(tmp_path, write_config):
    site = install_plugins(
        tmp_path / "build",
        tmp_path / "site",
        [
            ("acme_checks", ACME_CHECKS, 'acme = "acme_checks"'),
            ("acme_raises", ACME_RAISES, 'acme-raises = "acme_raises"'),
        ],
    )
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    result = _doctor(write_config, "", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "ok    acme licence: valid until 2099" in lines
    assert "FAIL  acme scanner: scanner daemon not reachable" in lines
    assert "warn  acme-raises first: before the error" in lines
    assert any(
        line.startswith("FAIL  plugin acme-raises: its checks raised RuntimeError: boom") for line in lines
    )
    assert "ok    vision: off" in result.stdout  # the built-ins' checks still run
    only_good = _doctor(write_config, "", env={**env, "DROPWARDEN_LOAD_PLUGINS": "acme,vision"})
    assert "acme-raises" not in only_good.stdout


def _mountinfo(tmp_path: Path, mounted_at: Path, kind: str) -> str:
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        f"90 22 0:55 / {mounted_at} rw,relatime shared:60 - {kind} server:/export rw,vers=4.2\n"
    )
    return str(table)


def test_an_inotify_watch_on_a_network_file_system_is_a_warning(tmp_path):
    """inotify sees only this host's writes on NFS: the doctor says so, and what to use instead."""
    root = tmp_path / "inbox"
    root.mkdir()
    table = _mountinfo(tmp_path, tmp_path, "nfs4")
    warning = network_check(WatchSettings(path=root), table)
    assert warning is not None and warning.status == "warn"
    assert "nfs4" in warning.detail and 'observer = "polling"' in warning.detail
    assert network_check(WatchSettings(path=root, observer="polling"), table) is None
    assert network_check(WatchSettings(path=root), _mountinfo(tmp_path, tmp_path, "xfs")) is None
