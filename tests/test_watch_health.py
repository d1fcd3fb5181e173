"""Watches that must not stop watching: a root moved away, deleted or replaced; files written right after
mkdir; file systems mounted inside a watch; writers that close between chunks. The real daemon, real
inotify, real mounts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dropwarden.config import Settings
from dropwarden.watch.activewatch import arm
from dropwarden.watch.settle import settle_quiet_for
from dropwarden.watch.watch import (
    NETWORK_FILE_SYSTEMS,
    Mount,
    WatchedTree,
    file_system_type,
    mount_holding,
    mount_points,
    mounts_inside,
)
from dropwarden.watch.watchkeeper import root_problem, where_now

from .conftest import require
from .daemon_harness import DaemonProcess, metrics_port
from .test_daemon import CLEAN, PII, Drop, write


@pytest.fixture
def drop(tmp_path: Path) -> Drop:
    return Drop(tmp_path)


@pytest.fixture
def running(drop: Drop):
    daemon = drop.daemon().start()
    yield daemon
    daemon.stop()


def degraded(daemon: DaemonProcess) -> dict[str, str]:
    """/healthz's degraded reasons (empty while it answers 200)."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(daemon)}/healthz", timeout=5)
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())["degraded"]
    return {}


def quarantined(layout: Drop, name: str) -> bool:
    return any(Path(s["original_path"]).name == name for s in layout.sidecars())


def log_events(daemon: DaemonProcess, event: str) -> list[dict]:
    lines = [json.loads(line) for line in daemon.log_lines if line.startswith("{")]
    return [line for line in lines if line.get("event", "").startswith(event)]


def watch_alerts(layout: Drop) -> list[dict]:
    return [a for a in layout.alert_lines() if a["event"]["action"] == "watch.lost"]


# ------------------------------------------------------------------------------ the root itself


def test_a_watch_root_moved_away_is_reported_and_a_folder_back_at_its_path_is_watched(drop):
    """Renaming the inbox away stops nothing silently: an error in the log, a watch.lost record naming
    where it went (whose files are not ours any more), an alert, /healthz degraded; a directory made
    again at the path is watched (re-armed, audited) and what landed in it meanwhile is judged."""
    daemon = drop.daemon().start()
    try:
        write(drop.inbox / "before.txt", CLEAN)
        daemon.wait_for(lambda: (drop.outbound / "before.txt").exists(), what="before.txt released")

        moved = drop.inbox.with_name("inbox.old")
        os.rename(drop.inbox, moved)
        (lost,) = daemon.wait_for(lambda: daemon.records("watch.lost"), what="watch.lost record")
        assert lost["body"]["watch"] == "inbox"
        assert lost["body"]["problem"] == "moved away"
        assert lost["body"]["moved_to"] == str(moved)
        assert "no longer watched" in lost["body"]["left_behind"]
        assert "watch:inbox" in degraded(daemon)
        (alert,) = daemon.wait_for(lambda: watch_alerts(drop), what="watch.lost alert")
        assert alert["file"]["path"] == str(drop.inbox)
        assert alert["dropwarden"]["audit_seq"] == lost["seq"]
        (error,) = log_events(daemon, "watch lost")
        assert error["level"] == "error" and error["moved_to"] == str(moved)

        write(moved / "left-behind.txt", PII)
        drop.inbox.mkdir()
        write(drop.inbox / "early.txt", PII)  # before the re-arm: the sweep after it finds this
        (rearmed,) = daemon.wait_for(lambda: daemon.records("watch.rearmed"), what="watch.rearmed")
        assert rearmed["body"]["watch"] == "inbox"
        write(drop.inbox / "late.txt", PII)
        daemon.wait_for(
            lambda: quarantined(drop, "early.txt") and quarantined(drop, "late.txt"),
            what="files in the folder made again",
        )
        daemon.wait_for(lambda: "watch:inbox" not in degraded(daemon), what="healthy again")
        assert (moved / "left-behind.txt").read_text() == PII
        assert not daemon.decisions_for("left-behind.txt")
    finally:
        daemon.stop()
    verified = drop.verify_audit()
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_watch_root_replaced_by_a_new_directory_is_watched_again_at_once(drop, running):
    """mv inbox away and mkdir inbox in one breath: the new directory is the one watched."""
    os.rename(drop.inbox, drop.inbox.with_name("inbox.old"))
    drop.inbox.mkdir()
    write(drop.inbox / "new.txt", PII)
    running.wait_for(lambda: quarantined(drop, "new.txt"), what="new.txt judged in the new inbox")
    (lost,) = running.records("watch.lost")
    assert lost["body"]["problem"] == "replaced by another directory"
    assert running.records("watch.rearmed")


def test_a_deleted_watch_root_is_reported_until_it_is_made_again(drop, running):
    """rmdir of the inbox (watchdog's own IN_DELETE_SELF, and the check against the pinned fd)."""
    drop.inbox.rmdir()
    (lost,) = running.wait_for(lambda: running.records("watch.lost"), what="watch.lost record")
    assert lost["body"]["problem"] == "deleted"
    assert "moved_to" not in lost["body"]
    time.sleep(1.5)
    assert "watch:inbox" in degraded(running), "still degraded while nothing is at the path"
    drop.inbox.mkdir()
    running.wait_for(lambda: running.records("watch.rearmed"), what="watch.rearmed")
    write(drop.inbox / "back.txt", PII)
    running.wait_for(lambda: quarantined(drop, "back.txt"), what="back.txt judged")
    assert not degraded(running)


def test_a_reload_while_a_watch_is_lost_arms_it_again(drop, running):
    """A reload arms every watch as a start does (making a missing folder): the loss is over."""
    drop.inbox.rmdir()
    running.wait_for(lambda: running.records("watch.lost"), what="watch.lost record")
    running.signal(signal.SIGHUP)
    (rearmed,) = running.wait_for(lambda: running.records("watch.rearmed"), what="watch.rearmed")
    assert rearmed["body"]["by"] == "reload"
    write(drop.inbox / "after-reload.txt", PII)
    running.wait_for(lambda: quarantined(drop, "after-reload.txt"), what="after-reload.txt judged")
    assert "watch:inbox" not in degraded(running)


def test_a_polled_watch_root_replaced_is_watched_again_too(tmp_path):
    drop = Drop(tmp_path)
    drop.config.write_text(
        drop.config.read_text().replace(
            'name = "inbox"\n', 'name = "inbox"\nobserver = "polling"\npolling_interval = 0.3\n'
        )
    )
    daemon = drop.daemon().start()
    try:
        os.rename(drop.inbox, drop.inbox.with_name("inbox.old"))
        daemon.wait_for(lambda: daemon.records("watch.lost"), what="watch.lost record")
        drop.inbox.mkdir()
        daemon.wait_for(lambda: daemon.records("watch.rearmed"), what="watch.rearmed")
        write(drop.inbox / "polled.txt", PII)
        daemon.wait_for(lambda: quarantined(drop, "polled.txt"), what="polled.txt judged")
    finally:
        daemon.stop()


def test_root_problem_compares_the_path_with_the_directory_held_open(tmp_path):
    root = tmp_path / "inbox"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert root_problem(str(root), fd) is None
        os.rename(root, tmp_path / "elsewhere")
        assert root_problem(str(root), fd) == "moved away"
        assert where_now(fd) == str(tmp_path / "elsewhere")
        root.symlink_to(tmp_path / "elsewhere")
        assert root_problem(str(root), fd) == "replaced by a symbolic link"
        root.unlink()
        root.mkdir()
        assert root_problem(str(root), fd) == "replaced by another directory"
        (tmp_path / "elsewhere").rmdir()
        assert root_problem(str(root), fd) == "deleted and recreated"
        assert where_now(fd) is None
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ new directories


def test_files_written_right_after_mkdir_are_judged_without_waiting_for_a_sweep(tmp_path):
    """A file complete before watchdog watches its new directory gets no close-write; watchdog reports
    it only as a plain create. Each new directory is listed once its watch is armed, so all are
    judged in seconds — not after open_writer_timeout (60 s) or the next sweep (300 s here)."""
    drop = Drop(tmp_path)
    drop.config.write_text(
        drop.config.read_text().replace("reconcile_interval = 5.0", "reconcile_interval = 300.0")
    )
    daemon = drop.daemon().start()
    try:
        names = []
        for i in range(20):
            folder = drop.inbox / f"batch{i}" / ("a/b/c" if i % 2 else "")
            folder.mkdir(parents=True)
            write(folder / f"card{i}.txt", PII)
            names.append(f"card{i}.txt")
        daemon.wait_for(
            lambda: all(quarantined(drop, n) for n in names), timeout=15, what="all 20 files judged"
        )
        for name in names:
            assert len(daemon.decisions_for(name)) == 1
    finally:
        daemon.stop()


# ------------------------------------------------------------------------------ mounts inside a watch


def test_a_file_system_mounted_inside_a_watch_is_reported_and_left_alone(drop, running):
    """inotify does not see into a mount made under a watched folder, and nothing there could be
    renamed to the quarantine or the release folder: the daemon says so (log warning, audit record,
    /healthz degraded) and leaves files under it alone, judging the rest as before; unmounted, it is
    watched again."""
    require(os.geteuid() == 0, "root (to mount a tmpfs)")
    mount_point = drop.inbox / "usb"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    try:
        reasons = running.wait_for(
            lambda: degraded(running).get("watch:inbox:mounts"), what="the mount reported"
        )
        assert str(mount_point) in reasons
        (record,) = running.wait_for(lambda: running.records("watch.mounts"), what="watch.mounts record")
        assert record["body"]["unwatched"] == [str(mount_point)]
        assert log_events(running, "file system mounted inside a watch")[0]["level"] == "warning"

        write(mount_point / "on-the-mount.txt", PII)
        write(drop.inbox / "beside-it.txt", PII)
        running.wait_for(lambda: quarantined(drop, "beside-it.txt"), what="the rest judged as before")
        # Two sweeps (every 5 s here): the second began after the write; then time to settle and judge.
        sweeps = len(log_events(running, "reconciled"))
        running.wait_for(
            lambda: len(log_events(running, "reconciled")) >= sweeps + 2, timeout=20, what="sweeps"
        )
        time.sleep(1.5)
        assert (mount_point / "on-the-mount.txt").read_text() == PII
        assert not running.decisions_for("on-the-mount.txt")
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
    running.wait_for(lambda: "watch:inbox:mounts" not in degraded(running), what="mount gone")
    write(mount_point / "after.txt", PII)
    running.wait_for(lambda: quarantined(drop, "after.txt"), what="the directory watched again")


def test_a_mount_present_at_start_is_reported_and_its_files_left_alone(drop):
    require(os.geteuid() == 0, "root (to mount a tmpfs)")
    mount_point = drop.inbox / "share"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    write(mount_point / "there-before.txt", PII)
    write(drop.inbox / "beside-it.txt", PII)
    daemon = drop.daemon().start()
    try:
        daemon.wait_for(lambda: quarantined(drop, "beside-it.txt"), what="the startup sweep")
        daemon.wait_for(lambda: log_events(daemon, "reconciled"), what="the startup sweep done")
        assert str(mount_point) in degraded(daemon)["watch:inbox:mounts"]
        time.sleep(1.5)
        assert not daemon.decisions_for("there-before.txt")
        assert (mount_point / "there-before.txt").read_text() == PII
    finally:
        daemon.stop()
        subprocess.run(["umount", str(mount_point)], check=True)


def test_mount_points_are_read_from_the_mount_table_with_their_escapes(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 0:40 / /srv/drop/inbox/usb\\040stick rw - vfat /dev/sdb1 rw\n"
        "41 22 0:41 / /srv/drop/.quarantine/x rw - tmpfs tmpfs rw\n"
        "42 22 0:42 / /srv/drop/inbox2 rw - tmpfs tmpfs rw\n"
    )
    points = mount_points(str(table))
    assert "/srv/drop/inbox/usb stick" in points
    tree = WatchedTree(
        Settings.model_validate({"watch": [{"path": "/srv/drop/inbox"}]}).watch[0],
        "/srv/drop/inbox",
        ("/srv/drop/.quarantine",),
    )
    assert mounts_inside(tree, points) == {"/srv/drop/inbox/usb stick"}


def test_the_file_system_of_a_path_is_that_of_the_deepest_mount_holding_it(tmp_path):
    r"""Mount points are matched whole (/srv/drop is not under /srv/dr), escapes (\040) are read, and
    of two mounts on one point the later one (the one visible) counts."""
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 0:40 / /srv/dr rw - tmpfs tmpfs rw\n"
        "41 22 0:41 / /srv/drop\\040box rw shared:5 - nfs4 nas:/drop rw\n"
        "42 22 0:42 / /srv/drop\\040box/sub rw - fuse.sshfs host:/x rw\n"
        "43 22 0:43 / /srv/over rw - nfs nas:/a rw\n"
        "44 43 0:44 / /srv/over rw - ext4 /dev/sdb1 rw,discard\n"
    )
    kind = lambda path: file_system_type(path, str(table))  # noqa: E731
    assert kind("/srv/drop box/inbox") == "nfs4"
    assert kind("/srv/drop box/sub/a") == "fuse.sshfs"
    assert kind("/srv/drop") == "ext4"
    assert kind("/srv/over/inbox") == "ext4"
    assert mount_holding("/srv/over/inbox", str(table)) == Mount("/srv/over", "ext4", "rw,discard")
    assert {"nfs4", "fuse.sshfs", "cifs"} <= NETWORK_FILE_SYSTEMS and "ext4" not in NETWORK_FILE_SYSTEMS


def test_an_armed_watch_knows_its_file_system_and_a_local_one_does_not_stall(tmp_path):
    settings = Settings.model_validate({"watch": [{"path": str(tmp_path / "inbox")}]}).watch[0]
    watch = arm(settings)
    try:
        assert watch.file_system == file_system_type(os.path.realpath(tmp_path / "inbox")) != ""
        assert not watch.may_stall
        watch.file_system = "nfs4"
        assert watch.may_stall
    finally:
        watch.close()


# ------------------------------------------------------------------------------ chunked writers


def test_a_per_watch_settle_quiet_judges_a_file_appended_in_chunks_as_one_file(tmp_path):
    """A writer that opens, appends and closes per chunk: with settle_quiet = 1 s on its watch, two
    appends 300 ms apart are one file, judged once — so a card split across the chunks is found."""
    drop = Drop(tmp_path)
    drop.config.write_text(
        drop.config.read_text().replace('name = "inbox"\n', 'name = "inbox"\nsettle_quiet = 1.0\n')
    )
    daemon = drop.daemon().start()
    try:
        target = drop.inbox / "chunks.txt"
        with target.open("a") as handle:
            handle.write("Customer card 4111 1111")
        time.sleep(0.3)
        with target.open("a") as handle:
            handle.write(" 1111 1111, thanks\n")
        daemon.wait_for(lambda: daemon.decisions_for("chunks.txt"), what="a decision")
        time.sleep(1.5)
        (decision,) = daemon.decisions_for("chunks.txt")
        assert decision["verdict"] == "finding"
        assert not (drop.outbound / "chunks.txt").exists()
    finally:
        daemon.stop()


def test_settle_quiet_is_per_watch_with_the_daemon_default_as_fallback():
    settings = Settings.model_validate(
        {
            "daemon": {"settle_quiet": 0.05},
            "watch": [{"path": "/srv/a", "name": "a", "settle_quiet": 2.0}, {"path": "/srv/b", "name": "b"}],
        }
    )
    assert settle_quiet_for(settings, "a") == 2.0
    assert settle_quiet_for(settings, "b") == 0.05


@pytest.fixture(autouse=True)
def _no_stray_mounts(tmp_path):
    """A failed mount test must not leave a tmpfs mounted under tmp_path."""
    yield
    for point in sorted(p for p in mount_points() if p.startswith(str(tmp_path) + os.sep))[::-1]:
        subprocess.run(["umount", "-l", point], check=False)
