"""The audit log's tail and its key: the anchor follows the durable head, K_0 leaves the host, damage says
what to do next, and a full disk leaves no empty files behind."""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dropwarden.audit import AuditError, AuditLog, verify
from dropwarden.audit.chain import key_id
from dropwarden.audit.store import anchor_path, current_key_path, k0_path, read_key_file

from .conftest import require, run_cli
from .daemon_harness import audit_records
from .test_audit import audit_settings, cli_verify, lines, records, reseal, write_log, write_records
from .test_daemon import PII, Drop, write
from .test_service import NotifyListener, wait_until

DECISIONS = [
    {"path": "/drop/in/a.txt", "outcome": "clean"},
    {"path": "/drop/in/b.txt", "outcome": "clean"},
    {"path": "/drop/in/card.txt", "outcome": "finding", "findings": [{"type": "CREDIT_CARD"}]},
    {"path": "/drop/in/c.txt", "outcome": "clean"},
    {"path": "/drop/in/d.txt", "outcome": "clean"},
]
# The log a running writer leaves (seq): 0 log.open, 1 checkpoint(open), 2-6 the decisions above.
LAST_CHECKPOINT = 1
FINDING_SEQ = 4


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"  # where conftest's write_config points the configuration


def running_writer(log_path: Path, state_dir: Path, bodies: list[dict[str, Any]]) -> None:
    """A daemon-like writer process (fsync=batch, background thread, no checkpoint due) that appends, lets
    its durable head be anchored (up to 5 s), and dies without closing: the tail after the last checkpoint
    is covered by nothing else."""
    script = (
        "import json, os, sys, time\n"
        "from pathlib import Path\n"
        "from dropwarden.audit import AuditLog\n"
        "from dropwarden.config import AuditSettings\n"
        "p, state = Path(sys.argv[1]), Path(sys.argv[2])\n"
        "s = AuditSettings(path=p, checkpoint_every=1000, checkpoint_interval=3600, fsync='batch')\n"
        "log = AuditLog.open(p, state, s)\n"
        "for body in json.loads(sys.argv[3]):\n"
        "    log.append('decision', body)\n"
        "log.sync()\n"
        "deadline = time.monotonic() + 5\n"
        "while time.monotonic() < deadline:\n"
        "    if json.loads((state / 'audit-anchor.json').read_text())['seq'] == log.last_seq:\n"
        "        break\n"
        "    time.sleep(0.01)\n"
        "os._exit(0)\n"
    )
    argv = [sys.executable, "-c", script, str(log_path), str(state_dir), json.dumps(bodies)]
    subprocess.run(argv, check=True, timeout=60)


def anchor(state_dir: Path) -> dict[str, Any]:
    return json.loads(anchor_path(state_dir).read_text())


def k0(state_dir: Path) -> bytes:
    return read_key_file(k0_path(state_dir))


def open_log(log_path: Path, state_dir: Path) -> AuditLog:
    return AuditLog.open(log_path, state_dir, audit_settings(log_path), background=False)


# ------------------------------------------------------------------------------------------ the anchored head


def test_the_anchor_names_the_durable_head_and_verify_counts_what_only_it_covers(
    log_path: Path, state_dir: Path, write_config: Any
) -> None:
    running_writer(log_path, state_dir, DECISIONS)
    recs = records(log_path)
    assert [r["type"] for r in recs] == ["log.open", "checkpoint", *["decision"] * 5]
    named = anchor(state_dir)
    assert (named["seq"], named["hash"]) == (6, recs[6]["hash"])
    assert named["checkpoint"]["seq"] == LAST_CHECKPOINT
    out = cli_verify(str(log_path), "--config", str(write_config()))
    assert out.exit_code == 0, out.output
    assert out.stdout.strip().endswith(
        "MACs verified, anchor matched; 5 records after the last checkpoint (seq 1):"
        " 5 covered by the anchor only, 0 by the hash chain only"
    )


def test_cutting_the_last_two_records_fails_verification_and_open(
    log_path: Path, state_dir: Path, write_config: Any
) -> None:
    running_writer(log_path, state_dir, DECISIONS)
    log_path.write_bytes(b"".join(lines(log_path)[:-2]))  # seq 5 and 6 gone; what is left chains
    assert verify(log_path, k0(state_dir)).ok  # the chain and the MACs alone cannot tell
    result = verify(log_path, k0(state_dir), anchor(state_dir))
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert "tail was truncated (2 records cut off)" in result.message
    out = cli_verify(str(log_path), "--config", str(write_config()))
    assert out.exit_code == 1 and "truncated" in out.stdout
    assert (
        f"Next: keep the file as evidence and let the daemon begin a new log: `mv {log_path} " in out.stdout
    )
    with pytest.raises(AuditError, match="the anchor names and which was durable when it was anchored"):
        open_log(log_path, state_dir)


def test_a_finding_rewritten_as_clean_with_recomputed_hashes_fails_verification_and_open(
    log_path: Path, state_dir: Path, write_config: Any
) -> None:
    running_writer(log_path, state_dir, DECISIONS)
    recs = records(log_path)
    assert recs[FINDING_SEQ]["body"]["outcome"] == "finding"
    recs[FINDING_SEQ]["body"] = {"path": "/drop/in/card.txt", "outcome": "clean"}
    reseal(recs, FINDING_SEQ)  # no checkpoint after it: no MAC to forge
    write_records(log_path, recs)
    assert verify(log_path, k0(state_dir)).ok  # the chain and the MACs alone cannot tell
    result = verify(log_path, k0(state_dir), anchor(state_dir))
    assert (result.ok, result.first_bad_seq) == (False, 6)
    assert "differs from the one the anchor names" in result.message
    out = cli_verify(str(log_path), "--config", str(write_config()))
    assert out.exit_code == 1 and "line 7 (seq 6)" in out.stdout
    with pytest.raises(AuditError, match="differs from the record the anchor names"):
        open_log(log_path, state_dir)


def test_a_head_copied_off_the_host_still_proves_the_tail_when_the_anchor_is_rewritten(
    log_path: Path, state_dir: Path, write_config: Any, tmp_path: Path
) -> None:
    """Whoever owns the host can rewrite the anchor file as well; an audit.head event a sink received
    cannot be taken back."""
    from dropwarden.act.alerts import audit_head_payload

    running_writer(log_path, state_dir, DECISIONS)
    event = tmp_path / "audit-head-event.json"
    event.write_text(json.dumps(audit_head_payload(anchor(state_dir))))
    kept = lines(log_path)[:-2]
    log_path.write_bytes(b"".join(kept))
    forged = {**anchor(state_dir), "seq": 4, "hash": json.loads(kept[-1])["hash"]}
    anchor_path(state_dir).write_text(json.dumps(forged))
    config = str(write_config())
    assert cli_verify(str(log_path), "--config", config).exit_code == 0
    out = cli_verify(str(log_path), "--anchor", str(event), "--config", config)
    assert out.exit_code == 1 and "tail was truncated (2 records cut off)" in out.stdout


def test_a_live_log_anchors_each_group_commit_and_hands_out_its_durable_head(
    log_path: Path, state_dir: Path
) -> None:
    settings = audit_settings(log_path, fsync="batch", checkpoint_every=1000, checkpoint_interval=3600)
    with AuditLog.open(log_path, state_dir, settings) as log:
        for index in range(50):
            log.append("decision", {"index": index})
        head = log.durable_head()
        assert head == {"log_id": log.log_id, "seq": log.last_seq, "hash": records(log_path)[-1]["hash"]}
        wait_until(lambda: anchor(state_dir)["seq"] == head["seq"], timeout=5, what="the head anchored")
        assert log.anchored is not None and log.anchored["hash"] == head["hash"]


# ------------------------------------------------------------------------------------------ K_0 off the host


def export_key(write_config: Any, *args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPWARDEN_")}
    return subprocess.run(
        [sys.executable, "-m", "dropwarden", "audit", "export-key", "--config", str(write_config()), *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_export_key_prints_k0_once_in_hex_and_removes_it(
    log_path: Path, state_dir: Path, write_config: Any, tmp_path: Path
) -> None:
    write_log(log_path, state_dir)
    key = k0(state_dir)
    old_inode = tmp_path / "k0-inode"
    os.link(k0_path(state_dir), old_inode)

    done = export_key(write_config, "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout == key.hex() + "\n"  # the key file's own format: --key reads it back
    assert "hex" in done.stderr and key_id(key) in done.stderr
    assert not k0_path(state_dir).exists()
    assert old_inode.read_bytes().strip(b"\0") == b""  # overwritten before it was unlinked
    exported = [r for r in records(log_path) if r["type"] == "audit.key_exported"]
    assert [r["body"]["key_id"] for r in exported] == [key_id(key)]
    assert key.hex() not in log_path.read_text()

    offline = tmp_path / "k0.hex"
    offline.write_text(done.stdout)
    config = str(write_config())
    without = cli_verify(str(log_path), "--config", config)
    assert (
        without.exit_code == 0
        and "MACs NOT verified" in without.stdout
        and "anchor matched" in without.stdout
    )
    assert "export-key" in without.output
    with_key = cli_verify(str(log_path), "--key", str(offline), "--config", config)
    assert with_key.exit_code == 0 and "MACs verified" in with_key.stdout

    again = export_key(write_config, "--yes")
    assert again.returncode == 1 and again.stdout == "" and "no K_0" in again.stderr


def test_export_key_refuses_without_a_terminal_and_without_yes(
    log_path: Path, state_dir: Path, write_config: Any
) -> None:
    write_log(log_path, state_dir)
    refused = export_key(write_config)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert refused.stdout == ""  # nothing printed: the key is printed once, when it is also removed
    assert k0_path(state_dir).exists()


@pytest.mark.parametrize(("answer", "removed"), [("n", False), ("y", True)])
def test_export_key_asks_on_the_terminal(
    log_path: Path, state_dir: Path, write_config: Any, answer: str, removed: bool
) -> None:
    write_log(log_path, state_dir)
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode() + b"\n")
        done = export_key(write_config, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert "Remove K_0 from this host" in done.stderr
    assert done.returncode == (0 if removed else 1), done.stderr
    assert k0_path(state_dir).exists() is not removed


def test_without_k0_the_log_goes_on_and_a_rotated_log_continues_the_key_chain(
    log_path: Path, state_dir: Path, write_config: Any, tmp_path: Path
) -> None:
    write_log(log_path, state_dir)
    offline = tmp_path / "k0.hex"
    offline.write_text(export_key(write_config, "--yes").stdout)
    write_log(log_path, state_dir, appends=3)  # resumed from the evolved key alone
    older = log_path.with_name("audit.jsonl-1")
    log_path.rename(older)
    write_log(log_path, state_dir, appends=3)  # a new log, as after rotation

    assert not k0_path(state_dir).exists(), "a new log must not put a key back on the host"
    old_recs, new_recs = records(older), records(log_path)
    opened = new_recs[0]["body"]
    assert opened["key_id"] == old_recs[0]["body"]["key_id"]
    last_epoch = old_recs[-1]["body"]["epoch"]
    assert opened["key_epoch"] == last_epoch + 1
    assert new_recs[1]["body"]["epoch"] == last_epoch + 1
    out = cli_verify(str(older), str(log_path), "--key", str(offline), "--config", str(write_config()))
    assert out.exit_code == 0, out.output
    assert out.stdout.count("MACs verified") == 2
    key = read_key_file(offline)
    assert verify(log_path, key, anchor(state_dir)).ok  # the newest file alone, with the one K_0
    state = json.loads(current_key_path(state_dir).read_text())
    assert state["key_id"] == key_id(key) and state["log_id"] == opened["log_id"]


def test_doctor_fails_while_k0_is_on_the_host(log_path: Path, state_dir: Path, write_config: Any) -> None:
    write_log(log_path, state_dir)
    config = str(write_config())
    before = run_cli("doctor", "--config", config)
    assert f"FAIL  audit key: K_0 is still on this host ({k0_path(state_dir)})" in before.stdout
    assert "dropwarden audit export-key" in before.stdout and before.returncode == 1
    assert export_key(write_config, "--yes").returncode == 0
    after = run_cli("doctor", "--config", config)
    assert "ok    audit key: K_0 is not on this host" in after.stdout


# ------------------------------------------------------------------------------------------ damage and disks


def test_a_torn_anchored_final_checkpoint_refuses_and_says_exactly_what_to_do(
    log_path: Path, state_dir: Path, write_config: Any
) -> None:
    write_log(log_path, state_dir)
    head = anchor(state_dir)
    raw = log_path.read_bytes()
    log_path.write_bytes(raw[: len(raw) - 40])  # the closing checkpoint, durable and anchored, torn
    with pytest.raises(AuditError) as refused:
        open_log(log_path, state_dir)
    message = str(refused.value)
    assert "the anchored record is torn" in message
    command = re.search(r"`(mv [^`]+)`", message)
    assert command is not None and "systemctl restart dropwarden" in message
    config = str(write_config())
    out = cli_verify(str(log_path), "--config", config)
    assert out.exit_code == 1 and "the anchored record is torn" in out.stdout
    assert f"`mv {log_path} {log_path}.damaged-" in out.stdout
    started = run_cli("run", "--config", config)
    assert started.returncode == 1 and f"`mv {log_path} {log_path}.damaged-" in started.stderr

    subprocess.run(shlex.split(command.group(1)), check=True)  # what the operator is told to do
    write_log(log_path, state_dir, appends=1)
    assert records(log_path)[0]["body"]["previous"] == {k: head[k] for k in ("log_id", "seq", "hash")}
    assert verify(log_path, k0(state_dir), anchor(state_dir)).ok


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 1 MiB tmpfs: a disk that really fills up."""
    require(os.geteuid() == 0, "root (to mount a tmpfs)")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_torn_tail_on_a_full_disk_leaves_no_empty_copies(full_disk: Path, state_dir: Path) -> None:
    log_path = full_disk / "audit.jsonl"
    write_log(log_path, state_dir)
    torn = b'{"body":{"index":99,"verdict":"cle'
    with log_path.open("ab") as handle:
        handle.write(torn)
    filler = full_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    for _ in range(3):  # the daemon retries every second while the disk is full
        with pytest.raises(AuditError, match="cannot set the torn tail"):
            open_log(log_path, state_dir)
    assert list(full_disk.glob("audit.jsonl.torn-*")) == []
    filler.unlink()
    open_log(log_path, state_dir).close()
    (aside,) = full_disk.glob("audit.jsonl.torn-*")
    assert aside.read_bytes() == torn


# ------------------------------------------------------------------------------------------ the daemon


def test_the_daemon_sends_the_head_with_alerts_and_to_the_sinks(tmp_path: Path) -> None:
    drop = Drop(tmp_path)
    daemon = drop.daemon(DROPWARDEN_AUDIT__HEAD_INTERVAL="0.3").start()
    try:
        write(drop.inbox / "card.txt", PII)
        alert = daemon.wait_for(
            lambda: [a for a in drop.alert_lines() if a["event"]["kind"] == "alert"], what="the alert"
        )[0]["dropwarden"]
        beacons = daemon.wait_for(
            lambda: [a for a in drop.alert_lines() if a["event"]["action"] == "audit.head"],
            what="an audit.head event",
        )
    finally:
        daemon.stop()
    by_seq = {r["seq"]: r for r in records(drop.audit)}
    head = alert["audit_head"]
    assert head["seq"] >= alert["audit_seq"]
    assert by_seq[head["seq"]]["hash"] == head["hash"]
    assert head["log_id"] == by_seq[0]["body"]["log_id"]
    for event in beacons:
        named = event["dropwarden"]["audit_head"]
        assert by_seq[named["seq"]]["hash"] == named["hash"]
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(beacons[-1]))
    verified = run_cli(
        "audit", "verify", "--config", str(drop.config), "--anchor", str(event_file), str(drop.audit)
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_daemon_warns_while_k0_is_on_the_host_and_works_on_without_it(tmp_path: Path) -> None:
    drop = Drop(tmp_path)
    listener = NotifyListener(str(tmp_path / "notify"))
    daemon = drop.daemon(NOTIFY_SOCKET=str(tmp_path / "notify"))
    try:
        daemon.start()
        assert any("audit K_0 is still on this host" in line for line in daemon.log_lines)
        wait_until(
            lambda: any("warning: audit K_0 on this host" in f for f in listener.fields()),
            what="STATUS warning",
        )
        exported = run_cli("audit", "export-key", "--yes", "--config", str(drop.config))
        assert exported.returncode == 0, exported.stderr
        seen = len(listener.fields())
        wait_until(
            lambda: any(f.startswith("STATUS=") and "K_0" not in f for f in listener.fields()[seen:]),
            what="STATUS without the warning",
        )
        write(drop.inbox / "after-export.txt", PII)
        daemon.wait_for(lambda: daemon.decisions_for("after-export.txt"), what="judged without K_0")
        rotated = drop.audit.with_name("audit.jsonl.1")
        os.rename(drop.audit, rotated)
        daemon.wait_for(lambda: audit_records(drop.audit), what="a new log")
        assert daemon.stop() == 0
    finally:
        listener.close()
        daemon.stop()
    assert not k0_path(drop.state).exists()
    assert [r["type"] for r in records(rotated) if r["type"] == "audit.key_exported"]
    offline = tmp_path / "k0.hex"
    offline.write_text(exported.stdout)
    verified = run_cli(
        "audit", "verify", "--config", str(drop.config), "--key", str(offline), str(rotated), str(drop.audit)
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count("MACs verified") == 2
