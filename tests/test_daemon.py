"""The daemon end to end: real inotify on real folders, the real process, its audit log and quarantine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO, install_plugins, require, run_cli
from .daemon_harness import DaemonProcess, audit_records, metrics_port

PII = "Customer: jane.doe@example.org, card 4111 1111 1111 1111, call +1 415 555 0132\n"
CLEAN = "Weekly status: all systems nominal. Next review on Thursday.\n"


class Drop:
    """A drop-folder layout in tmp_path and a config that watches it."""

    def __init__(self, root: Path, extra: str = "", release: bool = True) -> None:
        self.root = root
        self.inbox = root / "drop" / "inbox"
        self.outbound = root / "drop" / "outbound"
        self.quarantine = root / "drop" / ".quarantine"
        self.alerts = root / "log" / "alerts.jsonl"
        self.audit = root / "log" / "audit.jsonl"
        self.state = root / "state"
        self.inbox.mkdir(parents=True)
        self.config = root / "dropwarden.toml"
        release_line = f'release_to = "{self.outbound}"\n' if release else ""
        self.config.write_text(
            f'[state]\ndir = "{self.state}"\n[audit]\npath = "{self.audit}"\n'
            f'[metrics]\nlisten = "127.0.0.1:0"\n'
            f"[daemon]\nreconcile_interval = 5.0\nsettle_stat = 0.3\n{extra}"
            f'[[watch]]\nname = "inbox"\npath = "{self.inbox}"\nquarantine_dir = "{self.quarantine}"\n'
            f"{release_line}"
            f'[[alerts.sink]]\ntype = "jsonl"\npath = "{self.alerts}"\n'
        )

    def daemon(self, **env: str) -> DaemonProcess:
        return DaemonProcess(self.config, self.audit, env)

    def sidecars(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.quarantine.glob("*.json"))]

    def alert_lines(self) -> list[dict]:
        if not self.alerts.exists():
            return []
        return [json.loads(line) for line in self.alerts.read_text().splitlines()]

    def verify_audit(self) -> subprocess.CompletedProcess:
        return run_cli("audit", "verify", "--config", str(self.config), str(self.audit))


@pytest.fixture
def drop(tmp_path: Path) -> Drop:
    return Drop(tmp_path)


@pytest.fixture
def running(drop: Drop):
    daemon = drop.daemon().start()
    yield daemon
    daemon.stop()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_file_with_pii_is_quarantined_alerted_and_audited(drop, running):
    dropped = write(drop.inbox / "customers.txt", PII)
    os.chmod(dropped, 0o640)
    running.wait_for(lambda: drop.sidecars(), what="quarantine sidecar")

    assert not dropped.exists()
    (sidecar,) = drop.sidecars()
    item = drop.quarantine / sidecar["id"]
    assert item.read_text() == PII
    assert sidecar["original_path"] == str(dropped)
    assert sidecar["mode"] in ("0o640", "0640", "640")
    assert {f["type"] for f in sidecar["findings"]} >= {"EMAIL", "CREDIT_CARD"}
    assert os.stat(drop.quarantine).st_mode & 0o777 == 0o700

    (decision,) = running.decisions_for("customers.txt")
    assert decision["verdict"] == "finding" and decision["outcome"] == "finding"
    assert [a["op"] for a in decision["actions"]] == ["quarantine", "alert"]
    assert sidecar["audit_seq"] == next(r["seq"] for r in running.records("decision"))
    done = running.wait_for(lambda: running.records("action.done"), what="action.done")
    assert done[0]["body"]["id"] == sidecar["id"]

    (alert,) = running.wait_for(drop.alert_lines, what="alert")
    assert alert["event"]["kind"] == "alert"
    assert alert["file"]["hash"]["sha256"] == sidecar["sha256"]
    everything = (
        drop.audit.read_text() + drop.alerts.read_text() + json.dumps(sidecar) + "\n".join(running.log_lines)
    )
    for raw in ("jane.doe@example.org", "4111 1111 1111 1111", "4111111111111111", "415 555 0132"):
        assert raw not in everything

    running.stop()
    verified = drop.verify_audit()
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_clean_file_is_released_and_nothing_is_alerted(drop, running):
    write(drop.inbox / "status.txt", CLEAN)
    released = drop.outbound / "status.txt"
    running.wait_for(released.exists, what="release")
    assert released.read_text() == CLEAN
    assert not (drop.inbox / "status.txt").exists()
    (decision,) = running.decisions_for("status.txt")
    assert decision["verdict"] == "clean" and [a["op"] for a in decision["actions"]] == ["release"]
    assert drop.alert_lines() == []


def test_a_clean_file_stays_put_without_release_to(tmp_path):
    drop = Drop(tmp_path, release=False)
    daemon = drop.daemon().start()
    try:
        write(drop.inbox / "status.txt", CLEAN)
        daemon.wait_for(lambda: daemon.decisions_for("status.txt"), what="decision")
        assert (drop.inbox / "status.txt").read_text() == CLEAN
        assert daemon.decisions_for("status.txt")[0]["actions"] == []
    finally:
        daemon.stop()


def test_a_slow_writer_is_judged_once_on_its_final_content(drop, running):
    target = drop.inbox / "slow.txt"
    with target.open("w") as handle:
        handle.write(CLEAN)
        handle.flush()
        for _ in range(5):
            time.sleep(0.5)
            handle.write("more clean text\n")
            handle.flush()
        handle.write(PII)
    running.wait_for(lambda: running.decisions_for("slow.txt"), what="decision")
    time.sleep(1.5)
    (decision,) = running.decisions_for("slow.txt")
    assert decision["verdict"] == "finding"
    assert decision["identity"]["size"] == len(CLEAN) + 5 * len("more clean text\n") + len(PII)


def test_an_atomic_rename_in_is_judged(drop, running, tmp_path):
    staging = tmp_path / "staging.txt"
    staging.write_text(PII)
    os.rename(staging, drop.inbox / "renamed-in.txt")
    partial = drop.inbox / "report.part"
    partial.write_text(PII)
    os.rename(partial, drop.inbox / "report.txt")
    running.wait_for(lambda: len(drop.sidecars()) == 2, what="both quarantined")
    assert running.decisions_for("renamed-in.txt") and running.decisions_for("report.txt")
    assert not running.decisions_for("report.part"), "an ignored partial name was judged"


def test_files_dropped_while_the_daemon_is_down_are_judged_at_next_start(drop):
    daemon = drop.daemon().start()
    daemon.stop()
    write(drop.inbox / "offline-pii.txt", PII)
    (drop.inbox / "sub").mkdir()
    write(drop.inbox / "sub" / "offline-clean.txt", CLEAN)
    daemon = drop.daemon().start()
    try:
        daemon.wait_for(
            lambda: drop.sidecars() and (drop.outbound / "sub" / "offline-clean.txt").exists(),
            what="catch-up",
        )
        assert daemon.decisions_for("offline-pii.txt")[0]["origin"] == "reconcile"
    finally:
        daemon.stop()


def test_links_fifos_and_hard_links_are_skipped_untouched_and_audited(drop, running, tmp_path):
    secret = write(tmp_path / "outside-secret.txt", PII)
    (drop.inbox / "link.txt").symlink_to(secret)
    os.mkfifo(drop.inbox / "pipe")
    original = write(tmp_path / "original.txt", PII)
    os.link(original, drop.inbox / "hardlink.txt")

    def skipped() -> dict[str, str]:
        return {Path(r["body"]["path"]).name: r["body"]["reason"] for r in running.records("skipped")}

    running.wait_for(lambda: len(skipped()) == 3, what="three skipped records")
    assert skipped() == {"link.txt": "symlink", "pipe": "not_regular", "hardlink.txt": "hard_linked"}
    assert secret.read_text() == PII and original.read_text() == PII
    assert (drop.inbox / "link.txt").is_symlink() and (drop.inbox / "hardlink.txt").exists()
    assert drop.sidecars() == []


def test_names_with_newlines_and_invalid_utf8_are_judged_and_recorded_exactly(drop, running):
    raw_name = b"evil\nname\xff.txt"
    with open(os.path.join(os.fsencode(drop.inbox), raw_name), "wb") as handle:
        handle.write(PII.encode())
    (sidecar,) = running.wait_for(drop.sidecars, what="quarantine")
    import base64

    assert base64.b64decode(sidecar["original_path_b64"]) == os.fsencode(drop.inbox) + b"/" + raw_name
    (decision,) = [r["body"] for r in running.records("decision")]
    assert base64.b64decode(decision["path_b64"]).endswith(raw_name)


def test_a_bad_configuration_on_reload_is_rejected_and_the_old_one_kept(drop, running):
    good = drop.config.read_text()
    drop.config.write_text(good + "\n[limits]\nmax_fil_size = 3\n")
    running.signal(signal.SIGHUP)
    running.wait_for(lambda: running.records("daemon.reload"), what="reload record")
    assert running.records("daemon.reload")[0]["body"]["accepted"] is False
    write(drop.inbox / "after-bad-reload.txt", PII)
    running.wait_for(drop.sidecars, what="still judging")
    drop.config.write_text(good.replace("on_finding", "on_finding") + '\n[rules]\ndisable = ["pii.email"]\n')
    running.signal(signal.SIGHUP)
    running.wait_for(lambda: len(running.records("daemon.reload")) == 2, what="second reload")
    assert running.records("daemon.reload")[1]["body"]["accepted"] is True


def test_sigterm_drains_and_exits_zero(drop):
    daemon = drop.daemon().start()
    for index in range(50):
        write(drop.inbox / f"f{index}.txt", CLEAN)
    assert daemon.stop() == 0
    stop = daemon.records("daemon.stop")
    assert stop, "no daemon.stop record"
    assert drop.verify_audit().returncode == 0


def test_a_burst_of_ten_thousand_files_is_judged_exactly_once_each(tmp_path):
    drop = Drop(tmp_path, release=False)
    daemon = drop.daemon().start()
    try:
        count = 10_000
        for index in range(count):
            (drop.inbox / f"burst-{index:05d}.txt").write_text(f"line {index}: nothing to see here\n")
        daemon.wait_for(lambda: len(daemon.records("decision")) >= count, timeout=240, what="all decisions")
        time.sleep(2)
        names = [Path(r["body"]["path"]).name for r in daemon.records("decision")]
        assert len(names) == count
        assert len(set(names)) == count
    finally:
        daemon.stop()


def test_kill_9_during_a_burst_loses_nothing(tmp_path):
    import random

    drop = Drop(tmp_path)
    rng = random.Random(7)
    names = [f"k{index:04d}.txt" for index in range(600)]
    contents = {name: (PII if index % 3 == 0 else CLEAN) for index, name in enumerate(names)}
    daemon = drop.daemon().start()
    written = 0
    for _round in range(3):
        batch = names[written : written + 200]
        for name in batch:
            write(drop.inbox / name, contents[name])
        written += len(batch)
        time.sleep(rng.uniform(0.05, 0.6))
        daemon.kill()
        daemon = drop.daemon().start()
    try:

        def settled() -> bool:
            in_folder = {p.name for p in drop.inbox.iterdir()}
            return not in_folder and len(drop.sidecars()) + len(list(drop.outbound.iterdir())) == len(names)

        daemon.wait_for(settled, timeout=120, what="every file released or quarantined")
    finally:
        daemon.stop()
    sidecars = drop.sidecars()
    quarantined = {Path(s["original_path"]).name for s in sidecars}
    released = {p.name for p in drop.outbound.iterdir()}
    assert quarantined | released == set(names)
    assert {n for n in names if contents[n] == PII} == quarantined
    decided_seqs = {r["seq"] for r in audit_records(drop.audit, "decision")}
    for sidecar in sidecars:
        assert (drop.quarantine / sidecar["id"]).exists()
        assert sidecar["audit_seq"] in decided_seqs
    verified = drop.verify_audit()
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_daemon_refuses_a_quarantine_directory_that_is_a_symlink(tmp_path):
    drop = Drop(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    drop.quarantine.symlink_to(elsewhere)
    result = subprocess.run(
        [sys.executable, "-m", "dropwarden", "run", "--config", str(drop.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "quarantine" in result.stderr and "cannot start" in result.stderr


SLOW_DETECTOR = '''
"""A detector that takes its time on files containing SLOW-MARKER, so a test can swap the file meanwhile."""
import time

from dropwarden.hookspecs import hookimpl


class Slow:
    id = "slow"
    version = "1"
    view_kinds = frozenset({"text"})

    def detect(self, view, ctx):
        if "SLOW-MARKER" in view.text:
            time.sleep(2.0)
        return []


@hookimpl
def dropwarden_register_detectors(register):
    register(Slow())
'''


def test_a_file_replaced_between_judging_and_acting_is_not_acted_on_and_is_judged_again(tmp_path):
    site = install_plugins(
        tmp_path / "build", tmp_path / "site", [("slow_detector", SLOW_DETECTOR, 'slow = "slow_detector"')]
    )
    drop = Drop(tmp_path / "run")
    daemon = DaemonProcess(drop.config, drop.audit, {"PYTHONPATH": str(site)}).start()
    try:
        write(drop.inbox / "swap.txt", PII + "SLOW-MARKER\n")
        time.sleep(0.8)  # judged now, with the slow detector still running
        replacement = write(tmp_path / "replacement.txt", CLEAN)
        os.rename(replacement, drop.inbox / "swap.txt")
        aborted = daemon.wait_for(lambda: daemon.records("action.aborted"), what="aborted action")
        assert "changed after it was judged" in aborted[0]["body"]["reason"]
        daemon.wait_for(lambda: len(daemon.decisions_for("swap.txt")) == 2, what="second judgement")
        first, second = daemon.decisions_for("swap.txt")
        assert first["verdict"] == "finding" and second["verdict"] == "clean"
        assert drop.sidecars() == [], "the replacement was quarantined on the original's verdict"
        daemon.wait_for((drop.outbound / "swap.txt").exists, what="replacement released")
        assert (drop.outbound / "swap.txt").read_text() == CLEAN
    finally:
        daemon.stop()


def test_quarantine_restore_round_trip_while_the_daemon_runs(drop, running):
    write(drop.inbox / "needed.txt", PII)
    (sidecar,) = running.wait_for(drop.sidecars, what="quarantine")
    listed = run_cli("quarantine", "list", "--json", "--config", str(drop.config))
    assert [item["id"] for item in json.loads(listed.stdout)] == [sidecar["id"]]

    review = drop.root / "review"
    review.mkdir()
    occupant = write(review / "needed.txt", "someone else's file\n")
    refused = run_cli(
        "quarantine", "restore", sidecar["id"], "--to", str(review), "--config", str(drop.config)
    )
    assert refused.returncode == 1 and "exists" in refused.stderr
    assert occupant.read_text() == "someone else's file\n"

    restored = run_cli("quarantine", "restore", sidecar["id"], "--config", str(drop.config))
    assert restored.returncode == 0, restored.stderr
    decision = running.wait_for(
        lambda: [d for d in running.decisions_for("needed.txt") if d["outcome"] == "operator_released"],
        what="restored file judged",
    )[0]
    assert decision["operator_released_from"] == sidecar["id"]
    assert decision["sha256"] == sidecar["sha256"]
    assert drop.sidecars() == [], "the restored file was quarantined again"
    kinds = [(r["body"]["phase"], r["body"].get("via")) for r in running.records("quarantine.restore")]
    assert ("intent", "spool") in kinds and ("done", "spool") in kinds


def test_a_down_alert_sink_loses_nothing_and_is_reported(tmp_path):
    drop = Drop(tmp_path, extra="[alerts]\nretry_initial = 0.2\nretry_max = 0.5\n")
    siem = tmp_path / "siem"
    drop.config.write_text(drop.config.read_text().replace(str(drop.alerts), str(siem / "alerts.jsonl")))
    daemon = drop.daemon().start()
    try:
        write(drop.inbox / "a.txt", PII)
        write(drop.inbox / "b.txt", PII)
        daemon.wait_for(lambda: len(drop.sidecars()) == 2, what="quarantined while the sink is down")
        daemon.wait_for(
            lambda: any('"alert sink failing' in line for line in daemon.log_lines),
            what="sink failure logged",
        )
        siem.mkdir()  # the SIEM comes back
        lines = daemon.wait_for(
            lambda: (siem / "alerts.jsonl").exists() and (siem / "alerts.jsonl").read_text().splitlines(),
            what="alerts delivered",
        )
        time.sleep(1.0)
        lines = (siem / "alerts.jsonl").read_text().splitlines()
        ids = [json.loads(line)["event"]["id"] for line in lines]
        assert len(ids) == 2 and len(set(ids)) == 2
    finally:
        daemon.stop()


def test_undelivered_alerts_survive_a_restart(tmp_path):
    drop = Drop(tmp_path, extra="[alerts]\nretry_initial = 0.2\nretry_max = 0.5\n")
    siem = tmp_path / "siem"
    drop.config.write_text(drop.config.read_text().replace(str(drop.alerts), str(siem / "alerts.jsonl")))
    daemon = drop.daemon().start()
    write(drop.inbox / "a.txt", PII)
    daemon.wait_for(drop.sidecars, what="quarantined")
    daemon.kill()
    siem.mkdir()
    daemon = drop.daemon().start()
    try:
        daemon.wait_for(lambda: (siem / "alerts.jsonl").exists(), what="alert delivered after restart")
    finally:
        daemon.stop()
    assert len((siem / "alerts.jsonl").read_text().splitlines()) == 1


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a disk that can really fill up."""
    require(os.geteuid() == 0, "root (to mount a tmpfs)")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_degrades_the_daemon_loses_nothing_and_recovers(small_disk):
    drop = Drop(small_disk)
    daemon = drop.daemon().start()
    try:
        port = metrics_port(daemon)
        staged = write(small_disk / "staged.txt", PII)
        filler = small_disk / "filler"
        with open(filler, "wb", buffering=0) as handle:  # unbuffered: closing flushes nothing
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass
        os.rename(staged, drop.inbox / "while-full.txt")

        def degraded() -> dict:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
            except urllib.error.HTTPError as exc:
                return json.loads(exc.read())["degraded"]
            return {}

        reasons = daemon.wait_for(degraded, what="degraded health")
        assert "audit" in reasons
        assert (drop.inbox / "while-full.txt").read_text() == PII, "the file must stay put while unaudited"

        filler.unlink()
        daemon.wait_for(drop.sidecars, timeout=30, what="judged after space came back")
        daemon.wait_for(lambda: not degraded(), what="healthy again")
    finally:
        daemon.stop()
    verified = drop.verify_audit()
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_directory_moved_in_has_its_files_judged(drop, running, tmp_path):
    batch = tmp_path / "batch"
    (batch / "deeper").mkdir(parents=True)
    write(batch / "one.txt", PII)
    write(batch / "deeper" / "two.txt", CLEAN)
    os.rename(batch, drop.inbox / "batch")
    running.wait_for(
        lambda: drop.sidecars() and (drop.outbound / "batch" / "deeper" / "two.txt").exists(),
        what="files of the moved-in directory",
    )
    assert Path(drop.sidecars()[0]["original_path"]).name == "one.txt"


def test_a_polling_watch_judges_files_too(tmp_path):
    drop = Drop(tmp_path)
    drop.config.write_text(
        drop.config.read_text().replace(
            'name = "inbox"', 'name = "inbox"\nobserver = "polling"\npolling_interval = 0.3'
        )
    )
    daemon = drop.daemon().start()
    try:
        write(drop.inbox / "polled.txt", PII)
        daemon.wait_for(drop.sidecars, what="quarantine via the polling observer")
    finally:
        daemon.stop()


def test_the_daemon_refuses_a_watch_it_could_not_act_on(tmp_path):
    drop = Drop(tmp_path)
    subprocess.run(["mount", "--bind", "-o", "ro", str(drop.inbox), str(drop.inbox)], check=False)
    try:
        require(os.geteuid() == 0 and not os.access(drop.inbox, os.W_OK), "a read-only bind mount (root)")
        result = subprocess.run(
            [sys.executable, "-m", "dropwarden", "run", "--config", str(drop.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        subprocess.run(["umount", str(drop.inbox)], check=False)
    assert result.returncode == 1
    assert "not writable" in result.stderr and "ReadWritePaths" in result.stderr


def test_a_rotated_audit_log_is_closed_and_the_chain_goes_on_in_a_new_file(drop, running):
    write(drop.inbox / "before.txt", PII)
    running.wait_for(lambda: running.decisions_for("before.txt"), what="decision before rotation")
    rotated = drop.audit.with_name("audit.jsonl.1")
    os.rename(drop.audit, rotated)  # what logrotate does (without copytruncate)
    drop.audit.touch(mode=0o640)  # and, with its `create` option, an empty file in its place
    running.wait_for(lambda: audit_records(drop.audit), what="a new audit log")  # noticed, no signal

    write(drop.inbox / "after.txt", PII)
    running.wait_for(lambda: running.decisions_for("after.txt"), what="decision after rotation")
    old = audit_records(rotated)
    assert old[-1]["type"] == "checkpoint" and old[-1]["body"]["reason"] == "close"
    assert any(r["type"] == "decision" and r["body"]["path"].endswith("/before.txt") for r in old)
    assert not any(r["type"] == "decision" and r["body"]["path"].endswith("/after.txt") for r in old)
    opened = running.records()[0]
    assert opened["type"] == "log.open"
    assert opened["body"]["previous"] == {k: old[-1][k] for k in ("seq", "hash")} | {
        "log_id": old[-1]["body"]["log_id"]
    }

    running.stop()
    for path in (rotated, drop.audit):
        verified = run_cli("audit", "verify", "--config", str(drop.config), str(path))
        assert verified.returncode == 0, f"{path}: {verified.stdout}{verified.stderr}"


def test_the_shipped_logrotate_config_rotates_the_audit_log_and_alerts_under_the_running_daemon(
    drop, running, tmp_path
):
    require(shutil.which("logrotate") is not None, "logrotate")
    shipped = (REPO / "packaging" / "logrotate" / "dropwarden").read_text()
    config = tmp_path / "logrotate.conf"
    config.write_text(
        shipped.replace("/var/log/dropwarden/audit.jsonl", str(drop.audit)).replace(
            "/var/log/dropwarden/alerts.jsonl", str(drop.alerts)
        )
    )
    write(drop.inbox / "before.txt", PII)
    running.wait_for(lambda: running.decisions_for("before.txt"), what="decision before rotation")
    running.wait_for(drop.alerts.exists, what="the first alert")

    rotate = subprocess.run(
        ["logrotate", "--force", "--state", str(tmp_path / "logrotate.state"), str(config)],
        capture_output=True,
        text=True,
    )
    assert rotate.returncode == 0, rotate.stderr
    (rotated,) = drop.audit.parent.glob("audit.jsonl-*")
    running.wait_for(drop.audit.exists, what="a new audit log")
    write(drop.inbox / "after.txt", PII)
    running.wait_for(lambda: running.decisions_for("after.txt"), what="decision after rotation")
    running.wait_for(drop.alerts.exists, what="a new alerts file")
    running.stop()

    (rotated_alerts,) = drop.alerts.parent.glob("alerts.jsonl-*")
    assert "before.txt" in rotated_alerts.read_text() and "after.txt" not in rotated_alerts.read_text()
    assert "after.txt" in drop.alerts.read_text()
    assert audit_records(rotated)[-1]["body"]["reason"] == "close"
    assert audit_records(drop.audit)[0]["body"]["previous"]["hash"] == audit_records(rotated)[-1]["hash"]
    verified = run_cli("audit", "verify", "--config", str(drop.config), str(rotated), str(drop.audit))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"continued by {drop.audit}" in verified.stdout
