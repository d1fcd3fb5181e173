"""What reaches the outbound folder or the quarantine is what was judged, whatever else goes wrong.

The real daemon on real folders: a writer that keeps its descriptor open, files too large to read,
operator releases, a quarantine directory made unsafe or deleted, a full state disk, records that
cannot be written. Crash recovery of the hand-over steps runs a real process killed between them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dropwarden.act.handover import is_work_name
from dropwarden.act.recovery import recover
from dropwarden.audit import AuditLog
from dropwarden.config import AuditSettings, WatchSettings
from dropwarden.judge.intake import FileIdentity, Snapshot, take_snapshot
from dropwarden.pipeline import Pipeline, PipelineContext
from dropwarden.state import SCHEMA_VERSION, State
from dropwarden.watch.activewatch import arm
from dropwarden.watch.settle import WorkItem

from .conftest import install_plugins, require, run_cli
from .crash_steps import die_after, handover_steps
from .daemon_harness import DaemonProcess, metrics_port
from .test_daemon import CLEAN, PII, Drop, write

CARD = b"card 4111 1111 1111 1111\n"
SSN_LINE = b"employee SSN 123-45-6789\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def degraded(daemon: DaemonProcess) -> dict:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port(daemon)}/healthz", timeout=5)
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())["degraded"]
    return {}


def with_watch_lines(drop: Drop, *lines: str) -> Drop:
    """Add settings to the drop's [[watch]] table."""
    text = drop.config.read_text()
    drop.config.write_text(
        text.replace('name = "inbox"\n', 'name = "inbox"\n' + "".join(f"{x}\n" for x in lines))
    )
    return drop


def set_daemon(drop: Drop, key: str, value: str) -> None:
    text = drop.config.read_text()
    lines = [line for line in text.splitlines() if not line.startswith(f"{key} = ")]
    at = lines.index("[daemon]") + 1
    lines.insert(at, f"{key} = {value}")
    drop.config.write_text("\n".join(lines) + "\n")


def open_writer(path: Path, first: bytes) -> int:
    """A writer that keeps its descriptor open after its first write. A second descriptor, opened for
    writing and closed, produces the close-write that tells the daemon the file is complete."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, first)
    os.close(os.open(path, os.O_WRONLY))
    return fd


# ------------------------------------------------------------------------ 1. the judged bytes, a new inode


def test_a_writer_keeping_its_descriptor_open_cannot_change_the_released_file(tmp_path):
    """Released is a new file holding exactly the judged bytes: a card written afterwards through the
    writer's still-open descriptor is not in the outbound folder, whose bytes hash to the audited sha256."""
    drop = Drop(tmp_path)
    daemon = drop.daemon().start()
    fd = open_writer(drop.inbox / "a.txt", CLEAN.encode())
    try:
        released = drop.outbound / "a.txt"
        daemon.wait_for(released.exists, what="release")
        assert os.pwrite(fd, CARD, len(CLEAN)) == len(CARD)
        time.sleep(0.5)
        data = released.read_bytes()
        assert b"4111" not in data
        assert data == CLEAN.encode()
        (decision,) = daemon.decisions_for("a.txt")
        assert decision["verdict"] == "clean" and decision["sha256"] == sha256(data)
        assert os.fstat(fd).st_nlink == 0, "the writer's descriptor should point at an unlinked file"
        assert os.stat(released).st_mode & 0o777 == 0o644, "a release keeps the permission bits"
        assert not [n for n in os.listdir(drop.quarantine) if is_work_name(n)], "no work files left"
    finally:
        os.close(fd)
        daemon.stop()


def test_a_writer_keeping_its_descriptor_open_cannot_change_a_quarantined_item(drop, tmp_path):
    """The quarantine item is a new file too: after the writer appends through its descriptor, the item
    still hashes to its sidecar's (and the decision's) sha256."""
    daemon = drop.daemon().start()
    first = PII.encode()
    fd = open_writer(drop.inbox / "q.txt", first)
    try:
        (sidecar,) = daemon.wait_for(drop.sidecars, what="quarantine")
        daemon.wait_for(lambda: daemon.records("action.done"), what="action.done")
        assert os.pwrite(fd, b"and more: " + CARD, len(first)) > 0
        time.sleep(0.5)
        item = (drop.quarantine / sidecar["id"]).read_bytes()
        assert item == first
        assert sha256(item) == sidecar["sha256"] == daemon.decisions_for("q.txt")[0]["sha256"]
        assert os.stat(drop.quarantine / sidecar["id"]).st_mode & 0o777 == 0o600
        assert not (drop.inbox / "q.txt").exists()
        assert not [n for n in os.listdir(drop.quarantine) if is_work_name(n)]
    finally:
        os.close(fd)
        daemon.stop()


def _crash_between_steps(tmp_path: Path, op: str, crash_after: int) -> tuple[Drop, bytes]:
    """Run the pipeline's real hand-over for one judged file in a child process that dies (os._exit, as
    kill -9 would) after its `crash_after`-th file-system step; return the drop and the judged bytes."""
    drop = Drop(tmp_path)
    data = (PII if op == "quarantine" else CLEAN).encode()
    (drop.inbox / "f.txt").write_bytes(data)
    settings = drop_settings(drop)
    pid = os.fork()
    if pid == 0:  # the child: act, and die mid-way
        code = 1
        try:
            code = _act_and_die(drop, settings, op, crash_after)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, 99), status
    return drop, data


def drop_settings(drop: Drop) -> WatchSettings:
    return WatchSettings(
        path=drop.inbox, name="inbox", quarantine_dir=drop.quarantine, release_to=drop.outbound
    )


def _act_and_die(drop: Drop, settings: WatchSettings, op: str, crash_after: int) -> int:
    die_after(crash_after, handover_steps())
    watch = arm(settings)
    state = State(drop.state / "state.db")
    audit = AuditLog.open(drop.audit, drop.state, AuditSettings(path=drop.audit), background=False)
    pipeline = Pipeline(
        PipelineContext({watch.id: watch}, None, "test", []),  # type: ignore[arg-type]
        state,
        audit,
        None,  # type: ignore[arg-type]
        lambda *args: None,
    )
    dir_fd = os.dup(watch.root_fd)
    snapshot = take_snapshot(dir_fd, "f.txt", display_path="f.txt", max_size=1 << 20)
    assert isinstance(snapshot, Snapshot)
    item = WorkItem("inbox", "f.txt", "test")
    from types import SimpleNamespace

    from dropwarden.act.policy import Decision
    from dropwarden.act.stage import ActPlan
    from dropwarden.judge.judge import Judgement
    from dropwarden.verdict import Verdict, VerdictKind
    from dropwarden_actions.moves import QuarantineAction, ReleaseAction

    plan = ActPlan(
        watch,
        dir_fd,
        item,
        Judgement("f.txt", Verdict(VerdictKind.CLEAN), snapshot=snapshot),
        Decision("finding", (op,)),
        [],
        "f.txt",
        None,
        1,
        {"quarantine": QuarantineAction(), "release": ReleaseAction()},
        lambda relpath: SimpleNamespace(show=lambda: relpath),  # type: ignore[arg-type,return-value]
    )
    if op == "release":
        pipeline.act._release(plan, snapshot, "a" * 32)
    else:
        pipeline.act._quarantine(plan, snapshot, "b" * 32)
    audit.close()
    return 0


@pytest.mark.parametrize("op", ["release", "quarantine"])
@pytest.mark.parametrize("crash_after", [1, 2, 3, 4])
def test_a_crash_between_any_two_hand_over_steps_loses_nothing_and_leaves_no_work_files(
    tmp_path, op, crash_after
):
    """Killed after writing the copy, after taking the original, after placing the copy, or after
    unlinking the original: recovery at the next start leaves either the original in the inbox (judged
    again) or exactly the judged bytes at the destination — never both missing, never other bytes
    outbound — and no copy or held original in the store."""
    drop, data = _crash_between_steps(tmp_path, op, crash_after)
    watch = arm(drop_settings(drop))
    state = State(drop.state / "state.db")
    audit = AuditLog.open(drop.audit, drop.state, AuditSettings(path=drop.audit), background=False)
    try:
        assert len(state.pending_intents()) == 1, "the crash left its intent pending"
        recover(state, audit, {watch.id: watch})
        assert state.pending_intents() == []
    finally:
        audit.close()
        state.close()
        watch.close()
    assert not [n for n in os.listdir(drop.quarantine) if is_work_name(n)], os.listdir(drop.quarantine)
    in_inbox = sorted(p.name for p in drop.inbox.iterdir())
    if op == "release":
        outbound = sorted(p.name for p in drop.outbound.iterdir()) if drop.outbound.exists() else []
        for name in outbound:
            assert (drop.outbound / name).read_bytes() == data
        assert (in_inbox, outbound) in ((["f.txt"], []), ([], ["f.txt"])), (in_inbox, outbound)
    else:
        items = [n for n in os.listdir(drop.quarantine) if len(n) == 32]
        for name in items:
            assert (drop.quarantine / name).read_bytes() == data
            assert (drop.quarantine / (name + ".json")).exists(), "recovery writes the missing sidecar"
        assert (in_inbox, len(items)) in ((["f.txt"], 0), ([], 1)), (in_inbox, items)
    if in_inbox:
        assert (drop.inbox / "f.txt").read_bytes() == data


# ------------------------------------------------------------------------ 3. files that were never read


def test_files_too_large_to_read_are_quarantined_unread_and_alerted(tmp_path):
    """Fail-closed for every unscanned reason: a file over max_file_size (one small, one a 2 GiB sparse
    file, each with an SSN at its end) is moved into the quarantine by rename — no bytes copied — with
    a sidecar saying sha256 null and why, and an alert."""
    drop = Drop(tmp_path, extra="[limits]\nmax_file_size = 4096\n")
    with_watch_lines(drop, 'on_unscanned = ["quarantine", "alert"]')
    daemon = drop.daemon().start()
    try:
        small = drop.inbox / "over.txt"
        small.write_bytes(b"x" * 8192 + SSN_LINE)
        huge_size = 2 * 1024**3
        staged = tmp_path / "huge.txt"
        with open(staged, "wb") as handle:
            handle.truncate(huge_size)
            handle.seek(huge_size - len(SSN_LINE))
            handle.write(SSN_LINE)
        os.rename(staged, drop.inbox / "huge.txt")
        sidecars = daemon.wait_for(
            lambda: len(drop.sidecars()) == 2 and drop.sidecars(), what="both quarantined"
        )
        alerts = daemon.wait_for(
            lambda: len(drop.alert_lines()) == 2 and drop.alert_lines(), what="two alerts"
        )
    finally:
        daemon.stop()
    assert sorted(p.name for p in drop.inbox.iterdir()) == []
    by_name = {Path(s["original_path"]).name: s for s in sidecars}
    assert set(by_name) == {"over.txt", "huge.txt"}
    for name, sidecar in by_name.items():
        assert sidecar["sha256"] is None and "too_large" in sidecar["unread"]
        item = drop.quarantine / sidecar["id"]
        assert item.stat().st_size == sidecar["size"]
        (decision,) = [d for d in audit_decisions(drop) if d["path"].endswith("/" + name)]
        assert decision["outcome"] == "unscanned" and "too_large" in decision["reason"]
        assert [a["op"] for a in decision["actions"]] == ["quarantine", "alert"]
    assert by_name["huge.txt"]["size"] == huge_size
    assert (drop.quarantine / by_name["huge.txt"]["id"]).stat().st_blocks * 512 < 1 << 20, "moved, not copied"
    assert {a["event"]["action"] for a in alerts} == {"unscanned"}


def audit_decisions(drop: Drop) -> list[dict]:
    from .daemon_harness import audit_records

    return [r["body"] for r in audit_records(drop.audit, "decision")]


# ------------------------------------------------------------------------ 4. operator release, once


def test_an_operator_release_applies_to_the_restored_file_once_not_to_its_content(drop):
    """After `quarantine restore`, the restored file is released without a new alert; the same content
    arriving under another name, or again under the same name, is quarantined and alerted as usual
    (its decision noting the earlier release)."""
    daemon = drop.daemon().start()
    try:
        write(drop.inbox / "needed.txt", PII)
        (first,) = daemon.wait_for(drop.sidecars, what="quarantine")
        daemon.wait_for(lambda: len(drop.alert_lines()) == 1, what="first alert")
        restored = run_cli("quarantine", "restore", first["id"], "--config", str(drop.config))
        assert restored.returncode == 0, restored.stderr
        daemon.wait_for((drop.outbound / "needed.txt").exists, what="restored file released")
        (released,) = [d for d in daemon.decisions_for("needed.txt") if d["outcome"] == "operator_released"]
        assert released["operator_released_from"] == first["id"]

        write(drop.inbox / "copy-of-needed.txt", PII)
        daemon.wait_for(
            lambda: len(drop.sidecars()) == 1 and drop.sidecars()[0]["id"] != first["id"],
            what="same content under another name quarantined",
        )
        write(drop.inbox / "needed.txt", PII)
        daemon.wait_for(lambda: len(drop.sidecars()) == 2, what="same name again quarantined")
        daemon.wait_for(lambda: len(drop.alert_lines()) == 3, what="both alerted")
    finally:
        daemon.stop()
    again = daemon.decisions_for("copy-of-needed.txt")[0]
    assert again["outcome"] == "finding" and again["operator_released_from"] == first["id"]
    assert [d["outcome"] for d in daemon.decisions_for("needed.txt")] == [
        "finding",
        "operator_released",
        "finding",
    ]
    assert (drop.outbound / "needed.txt").read_text() == PII
    assert sorted(p.name for p in drop.outbound.iterdir()) == ["needed.txt"]


def test_a_schema_1_state_database_is_migrated_and_its_content_exemptions_kept_as_history(tmp_path):
    """Release entries keyed by content alone (schema 1) exempt nothing after the upgrade; they remain
    as history, which a later decision on that content can name."""
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE operator_released (sha256 TEXT PRIMARY KEY, item_id TEXT NOT NULL, released REAL NOT NULL);"
        f"INSERT INTO operator_released VALUES ('{'ab' * 32}', '{'c' * 32}', 1.0);"
    )
    db.commit()
    db.close()
    state = State(path)
    try:
        version = state._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert int(version) == SCHEMA_VERSION == 2
        assert state.earlier_release_of("ab" * 32) == "c" * 32
        assert state.pending_operator_release("", b"") is None
        tables = {r[0] for r in state._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "operator_released" not in tables
    finally:
        state.close()
    State(path).close()  # opening again is a no-op


# ------------------------------------------------------------------------ 12. an unsafe quarantine


def test_a_quarantine_directory_made_world_writable_holds_files_in_the_inbox_until_fixed(drop):
    """Made 0777 while running: nothing is moved into (or staged through) it. The files wait in the
    inbox, audited as deferred; the daemon is degraded (quarantine:<watch>) until the directory is
    private again, then finishes them by itself."""
    daemon = drop.daemon().start()
    try:
        os.chmod(drop.quarantine, 0o777)
        reasons = daemon.wait_for(lambda: degraded(daemon), what="degraded")
        assert "quarantine:inbox" in reasons and "0777" in reasons["quarantine:inbox"]
        write(drop.inbox / "secret.txt", PII)
        write(drop.inbox / "fine.txt", CLEAN)
        daemon.wait_for(
            lambda: daemon.decisions_for("secret.txt") and daemon.decisions_for("fine.txt"),
            what="both judged",
        )
        time.sleep(1.0)
        assert (drop.inbox / "secret.txt").read_text() == PII
        assert (drop.inbox / "fine.txt").read_text() == CLEAN
        assert os.listdir(drop.quarantine) == []
        assert not drop.outbound.exists() or os.listdir(drop.outbound) == []
        (decision,) = daemon.decisions_for("secret.txt")
        assert decision["actions"][0]["op"] == "quarantine" and "deferred" in decision["actions"][0]
        assert "deferred" in daemon.decisions_for("fine.txt")[0]["actions"][0]

        os.chmod(drop.quarantine, 0o700)
        daemon.wait_for(drop.sidecars, what="quarantined once the directory is private again")
        daemon.wait_for((drop.outbound / "fine.txt").exists, what="released once usable again")
        daemon.wait_for(lambda: not degraded(daemon), what="healthy again")
    finally:
        daemon.stop()
    assert not (drop.inbox / "secret.txt").exists()


def test_a_deleted_quarantine_directory_is_created_again_and_nothing_goes_into_the_deleted_one(drop):
    """Deleted while running: the daemon re-creates it (private) and quarantines there."""
    daemon = drop.daemon().start()
    try:
        shutil.rmtree(drop.quarantine)
        write(drop.inbox / "secret.txt", PII)
        (sidecar,) = daemon.wait_for(drop.sidecars, what="quarantined in the re-created directory")
        assert (drop.quarantine / sidecar["id"]).read_text() == PII
        assert os.stat(drop.quarantine).st_mode & 0o777 == 0o700
        assert not (drop.inbox / "secret.txt").exists()
        daemon.wait_for(lambda: not degraded(daemon), what="healthy")
    finally:
        daemon.stop()


# ------------------------------------------------------------------------ 13. a full state disk


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


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def test_files_judged_while_the_state_database_was_full_are_judged_again_once_space_is_back(
    tmp_path, small_disk
):
    """The state database on a disk that fills up (its WAL there too; the audit log elsewhere): a file
    judged meanwhile cannot be recorded, waits in the inbox, the daemon says `state` is degraded, and
    once space is freed the file is judged again and quarantined by itself, long before the periodic
    reconcile."""
    drop = Drop(tmp_path / "run")
    set_daemon(drop, "reconcile_interval", "600.0")
    drop.state.mkdir(parents=True)
    (drop.state / "state.db").symlink_to(small_disk / "state.db")  # SQLite puts -wal/-shm beside the target
    daemon = drop.daemon().start()
    try:
        assert (small_disk / "state.db-wal").exists()
        filler = fill(small_disk)
        write(drop.inbox / "while-full.txt", PII)
        reasons = daemon.wait_for(
            lambda: degraded(daemon).get("state") and degraded(daemon), what="state degraded"
        )
        assert "full" in reasons["state"]
        time.sleep(1.0)
        assert (drop.inbox / "while-full.txt").read_text() == PII, "not moved without its intent"
        filler.unlink()
        daemon.wait_for(drop.sidecars, timeout=20, what="judged again after space came back")
        daemon.wait_for(lambda: "state" not in degraded(daemon), what="state healthy again")
    finally:
        daemon.stop()
    assert not (drop.inbox / "while-full.txt").exists()


# ------------------------------------------------------------------------ 5. records that cannot be written

HOSTILE_DETECTOR = '''
"""Findings the record cannot hold: a NaN confidence (not JSON), and one whose rendering runs out of memory."""
from dropwarden.findings import Finding, Location, Severity
from dropwarden.hookspecs import hookimpl


class Unrenderable(Finding):
    def to_dict(self):
        raise MemoryError()


class Hostile:
    id = "hostile"
    version = "1"
    view_kinds = frozenset({"text"})

    def detect(self, view, ctx):
        args = ("TEST_SECRET", "hostile", self.id, self.version, Severity.HIGH)
        if "NAN-MARKER" in view.text:
            return [Finding(*args, float("nan"), Location(view.name), "***", "fp")]
        if "OOM-MARKER" in view.text:
            return [Unrenderable(*args, 0.9, Location(view.name), "***", "fp")]
        return []


@hookimpl
def dropwarden_register_detectors(register):
    register(Hostile())
'''


def test_a_judgement_that_cannot_be_recorded_is_recorded_unscanned_and_quarantined(tmp_path):
    """A decision record that cannot be built (MemoryError) or written (a value JSON cannot hold) still
    ends in a decision: unscanned, the reason naming only the exception type, and the policy acts on it
    (quarantine, fail-closed). Nothing of the file reaches the outbound folder."""
    site = install_plugins(
        tmp_path / "build",
        tmp_path / "site",
        [("hostile_detector", HOSTILE_DETECTOR, 'hostile = "hostile_detector"')],
    )
    drop = Drop(tmp_path / "run")
    daemon = DaemonProcess(drop.config, drop.audit, {"PYTHONPATH": str(site)}).start()
    try:
        write(drop.inbox / "nan.txt", "NAN-MARKER\n")
        write(drop.inbox / "oom.txt", "OOM-MARKER\n")
        daemon.wait_for(lambda: len(drop.sidecars()) == 2, what="both quarantined")
    finally:
        daemon.stop()
    reasons = {}
    for name in ("nan.txt", "oom.txt"):
        (decision,) = daemon.decisions_for(name)
        assert decision["outcome"] == "unscanned" and decision["findings"] == []
        assert decision["actions"][0]["op"] == "quarantine"
        reasons[name] = decision["reason"]
    assert reasons == {"nan.txt": "record_error (ValueError)", "oom.txt": "record_error (MemoryError)"}
    assert not drop.outbound.exists() or os.listdir(drop.outbound) == []
    assert os.listdir(drop.inbox) == []
    verified = drop.verify_audit()
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.fixture
def drop(tmp_path: Path) -> Drop:
    return Drop(tmp_path)


# ------------------------------------------------------------------------ 6. names in the state database

SECRET_NAME = b"payroll-card-4111111111111111-ssn-123-45-6789.txt"


def _intent_body(relpath: bytes) -> dict:
    """What the pipeline writes ahead of a quarantine: the raw relative path and the sidecar (original
    path, raw and base64), large enough (findings) to need overflow pages."""
    original = b"/srv/drop/inbox/" + relpath
    sidecar = {
        "original_path": original.decode(),
        "original_path_b64": base64.b64encode(original).decode(),
        "relative_path_b64": base64.b64encode(relpath).decode(),
        "findings": [{"type": "card", "excerpt": "[******1111]", "n": i} for i in range(200)],
    }
    return {
        "op": "quarantine",
        "watch": "inbox",
        "relpath_b64": base64.b64encode(relpath).decode(),
        "item_id": "ab" * 16,
        "hold": ".dw-" + "ab" * 16 + ".hold",
        "sidecar": sidecar,
    }


def _name_traces(relpath: bytes) -> list[bytes]:
    body = _intent_body(relpath)
    return [
        b"4111111111111111",
        body["relpath_b64"].encode(),
        body["sidecar"]["original_path_b64"].encode()[8:40],
    ]


def _database_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)}


def test_a_finished_intent_leaves_no_raw_file_name_in_the_state_database_or_its_log(tmp_path):
    """Raw names are in the state database only while a move is in flight: once the intent is finished
    (done, aborted, failed), neither the database file (free pages included) nor its write-ahead log
    holds the name's bytes, raw or base64 — also after a checkpoint by another connection. A pending
    intent keeps its whole body (recovery needs it)."""
    path = tmp_path / "state" / "state.db"
    state = State(path)
    try:
        for n, outcome in enumerate(("done", "aborted", "failed")):
            state.add_intent(f"{n:032x}", "quarantine", _intent_body(SECRET_NAME))
            state.record_judged(FileIdentity(1, n, 2, 3, 4), None, "finding", "r", "inbox")
            state.finish_intent(f"{n:032x}", outcome)
        other = b"still-moving-4222222222222222.txt"
        state.add_intent("f" * 32, "quarantine", _intent_body(other))
        (pending,) = state.pending_intents()
        assert pending.body == _intent_body(other)
        external = sqlite3.connect(path)
        external.execute("PRAGMA wal_checkpoint(PASSIVE)")
        external.close()
        files = _database_bytes(path)
        assert "state.db" in files
        for name, data in files.items():
            for trace in _name_traces(SECRET_NAME):
                assert trace not in data, f"{trace!r} left in {name}"
    finally:
        state.close()


def test_the_state_database_and_its_log_are_private_whatever_the_umask(tmp_path):
    """state.db, -wal and -shm are created 0600 under umask 000, and an existing database left 0644 (an
    older version) is tightened, with its -wal and -shm, when it is opened."""
    path = tmp_path / "state" / "state.db"
    old = os.umask(0)
    try:
        first = State(path)
        first.add_intent("a" * 32, "release", {"watch": "inbox"})
        private = {"state.db": 0o600, "state.db-wal": 0o600, "state.db-shm": 0o600}
        assert {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()} == private
        for p in path.parent.iterdir():
            p.chmod(0o644)
        State(path).close()  # `first` still open: -wal and -shm stay on disk
        assert {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()} == private
        assert path.parent.stat().st_mode & 0o777 == 0o750
        first.close()
    finally:
        os.umask(old)


# ------------------------------------------------------------------------ 7. unread items, restored


def test_an_unread_item_changed_through_a_writers_descriptor_is_not_restored(tmp_path):
    """A file too large to read is moved into the quarantine itself, so a writer that kept its descriptor
    still reaches it: the item is made 0600 and its identity in the store recorded, and after the writer
    changes it there `quarantine restore` refuses (exit 1, "changed after it was quarantined"), leaving
    the item in the quarantine and the inbox empty."""
    drop = Drop(tmp_path, extra="[limits]\nmax_file_size = 4096\n")
    with_watch_lines(drop, 'on_unscanned = ["quarantine", "alert"]')
    daemon = drop.daemon().start()
    fd = open_writer(drop.inbox / "big.txt", b"x" * 8192)
    try:
        (sidecar,) = daemon.wait_for(drop.sidecars, what="quarantined unread")
        item = drop.quarantine / sidecar["id"]
        assert sidecar["sha256"] is None and "too_large" in sidecar["unread"]
        assert item.stat().st_mode & 0o777 == 0o600, "an unread item is private like any other"
        st = item.stat()
        assert sidecar["stored_identity"] == {
            "dev": st.st_dev,
            "ino": st.st_ino,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns,
        }
        time.sleep(0.05)
        assert os.pwrite(fd, SSN_LINE, 0) == len(SSN_LINE), "the writer still reaches the item"
        refused = run_cli("quarantine", "restore", sidecar["id"], "--config", str(drop.config))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "changed after it was quarantined" in refused.stderr
        assert item.exists() and (drop.quarantine / f"{sidecar['id']}.json").exists()
        time.sleep(0.5)
        assert list(drop.inbox.iterdir()) == [], "the changed bytes did not go back"
    finally:
        os.close(fd)
        daemon.stop()


def test_a_restored_unread_item_is_judged_again_not_operator_released(tmp_path):
    """Operator release applies to judged content only: an item quarantined unread (too large), restored
    unchanged, is judged again where it lands — still too large, so unscanned and quarantined again —
    never left in the inbox as `operator_released`."""
    drop = Drop(tmp_path, extra="[limits]\nmax_file_size = 4096\n")
    with_watch_lines(drop, 'on_unscanned = ["quarantine", "alert"]')
    daemon = drop.daemon().start()
    try:
        write(drop.inbox / "big.txt", "y" * 8192 + SSN_LINE.decode())
        (first,) = daemon.wait_for(drop.sidecars, what="quarantined unread")
        restored = run_cli("quarantine", "restore", first["id"], "--config", str(drop.config))
        assert restored.returncode == 0, restored.stderr
        (again,) = daemon.wait_for(
            lambda: [s for s in drop.sidecars() if s["id"] != first["id"]], what="quarantined again"
        )
        daemon.wait_for(lambda: len(drop.alert_lines()) == 2, what="alerted again")
    finally:
        daemon.stop()
    assert list(drop.inbox.iterdir()) == []
    assert again["sha256"] is None and "too_large" in again["unread"]
    decisions = daemon.decisions_for("big.txt")
    assert [d["outcome"] for d in decisions] == ["unscanned", "unscanned"]
    assert not any("operator_released_from" in d for d in decisions)
