"""The quarantine store and `dropwarden quarantine …` on real directories: privacy, identity, round trips."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dropwarden.act.fsops import open_dir
from dropwarden.act.quarantine import QuarantineError, QuarantineStore, default_quarantine_dir
from dropwarden.act.sidecar import display_bytes, sidecar_for
from dropwarden.audit import AuditLog
from dropwarden.config import AuditSettings, WatchSettings
from dropwarden.judge.intake import FileIdentity, Snapshot, take_snapshot

from .conftest import run_cli

SECRET = b"customer card 4111 1111 1111 1111, call 090-1234-5678\n"
ODD_NAME = b"report\nfinal\xff\xfe.txt"  # a newline and bytes that are not UTF-8
IS_ROOT = os.geteuid() == 0


def _mode(path: Path | bytes) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _bpath(base: Path, *parts: bytes) -> bytes:
    return b"/".join([os.fsencode(base), *parts])


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    path = tmp_path / "drop"
    path.mkdir()
    return path


@pytest.fixture
def store(tmp_path: Path, drop: Path):
    root_fd = open_dir(drop)
    opened = QuarantineStore.open(tmp_path / "q" / "inbox", same_fs_as_fd=root_fd, create=True)
    os.close(root_fd)
    yield opened
    opened.close()


def put_file(drop: Path, relative: bytes, data: bytes = SECRET, mode: int = 0o640) -> bytes:
    """Create drop/relative (parents included) with the given bytes and mode; return its full path bytes."""
    full = _bpath(drop, relative)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as handle:
        handle.write(data)
    os.chmod(full, mode)
    return full


def quarantine(store: QuarantineStore, drop: Path, relative: bytes) -> tuple[str, Snapshot, os.stat_result]:
    """What the daemon does: snapshot, move in, check identity, write the sidecar (creating the file with
    SECRET first when it does not exist)."""
    if not os.path.lexists(_bpath(drop, relative)):
        put_file(drop, relative)
    parent, _, name = relative.rpartition(b"/")
    dir_fd = open_dir(_bpath(drop, parent) if parent else os.fsencode(drop))
    try:
        snapshot = take_snapshot(dir_fd, name, display_path=display_bytes(relative), max_size=1 << 20)
        assert isinstance(snapshot, Snapshot), snapshot
        item_id = store.new_id()
        moved = store.move_in(dir_fd, name, item_id)
    finally:
        os.close(dir_fd)
    meta = sidecar_for(
        snapshot,
        item_id=item_id,
        watch_id="inbox",
        watch_root=drop,
        relative_path=relative,
        verdict="finding",
        reason=None,
        findings=[{"type": "CREDIT_CARD", "severity": "high", "excerpt": "4111 **** **** 1111"}],
        audit_seq=7,
    )
    store.write_sidecar(item_id, meta)
    return item_id, snapshot, moved


# ----------------------------------------------------------------------------------------- the store


def test_store_and_created_parents_are_private_directories(tmp_path: Path, drop: Path):
    os.umask(0o022)
    root_fd = open_dir(drop)
    try:
        with QuarantineStore.open(tmp_path / "a" / "b" / "store", same_fs_as_fd=root_fd, create=True) as qs:
            assert stat.S_ISDIR(os.fstat(qs.fd).st_mode)
        for path in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "store"):
            assert _mode(path) == 0o700, path
        # Opening again (existing, create=False) works; a missing one without create is refused.
        QuarantineStore.open(tmp_path / "a" / "b" / "store", same_fs_as_fd=root_fd, create=False).close()
        with pytest.raises(QuarantineError, match="does not exist"):
            QuarantineStore.open(tmp_path / "missing", same_fs_as_fd=root_fd, create=False)
    finally:
        os.close(root_fd)


def test_move_in_keeps_bytes_and_identity(store: QuarantineStore, drop: Path):
    put_file(drop, b"sub/card.txt")
    before = os.stat(drop / "sub" / "card.txt")
    item_id, snapshot, moved = quarantine(store, drop, b"sub/card.txt")

    assert len(item_id) == 32 and int(item_id, 16) >= 0
    assert not (drop / "sub" / "card.txt").exists()
    assert (moved.st_dev, moved.st_ino) == (before.st_dev, before.st_ino)  # renamed, not copied
    kept = FileIdentity.of(moved)
    assert (kept.size, kept.mtime_ns) == (snapshot.identity.size, snapshot.identity.mtime_ns)
    assert (store.path / item_id).read_bytes() == SECRET
    assert store.has_item(item_id) and store.has_sidecar(item_id)
    assert _mode(store.path) == 0o700


def test_move_in_never_replaces_an_existing_item(store: QuarantineStore, drop: Path):
    item_id, _, _ = quarantine(store, drop, b"one.txt")
    put_file(drop, b"two.txt", b"other")
    dir_fd = open_dir(drop)
    try:
        with pytest.raises(FileExistsError):
            store.move_in(dir_fd, "two.txt", item_id)
    finally:
        os.close(dir_fd)
    assert (store.path / item_id).read_bytes() == SECRET
    assert (drop / "two.txt").read_bytes() == b"other"


def test_sidecar_records_the_original_and_is_0600(store: QuarantineStore, drop: Path):
    relative = b"nested/" + ODD_NAME
    full = put_file(drop, relative, mode=0o604)
    if IS_ROOT:
        os.chown(full, 4321, 8765)
    st = os.stat(full)
    item_id, snapshot, _ = quarantine(store, drop, relative)

    sidecar_path = store.path / f"{item_id}.json"
    assert _mode(sidecar_path) == 0o600
    meta = json.loads(sidecar_path.read_bytes())
    assert meta == store.read_sidecar(item_id)
    assert meta["id"] == item_id
    assert base64.b64decode(meta["original_path_b64"]) == full
    assert base64.b64decode(meta["relative_path_b64"]) == relative
    assert "\n" not in meta["original_path"] and meta["original_path"].endswith(
        "report\\nfinal\\xff\\xfe.txt"
    )
    assert meta["owner"] == {"uid": st.st_uid, "gid": st.st_gid}
    assert meta["mode"] == "0604"
    assert meta["size"] == len(SECRET) and meta["mtime_ns"] == st.st_mtime_ns
    assert meta["ctime_ns"] == snapshot.ctime_ns
    assert meta["sha256"] == hashlib.sha256(SECRET).hexdigest()
    assert (meta["verdict"], meta["reason"], meta["watch"], meta["audit_seq"]) == (
        "finding",
        None,
        "inbox",
        7,
    )
    assert meta["findings"][0]["type"] == "CREDIT_CARD"
    assert meta["quarantined_at"].endswith("Z") and "T" in meta["quarantined_at"]
    assert meta["dropwarden_version"]
    assert "4111 1111 1111 1111" not in sidecar_path.read_text()  # the file's content is not copied in
    assert sorted(os.listdir(store.path)) == sorted([item_id, f"{item_id}.json"])  # no temp files left


def test_list_items_shows_items_without_sidecar(store: QuarantineStore, drop: Path):
    with_sidecar, _, _ = quarantine(store, drop, b"a.txt")
    put_file(drop, b"b.txt", b"bee")
    bare = store.new_id()
    dir_fd = open_dir(drop)
    try:
        store.move_in(dir_fd, "b.txt", bare)  # crash before the sidecar
    finally:
        os.close(dir_fd)
    items = {item["id"]: item for item in store.list_items()}
    assert items[with_sidecar]["sidecar"] is True and items[with_sidecar]["file"] is True
    assert items[with_sidecar]["sha256"] == hashlib.sha256(SECRET).hexdigest()
    assert items[bare]["sidecar"] is False and items[bare]["size"] == 3


def test_refuses_a_symlinked_store(tmp_path: Path, drop: Path):
    real = tmp_path / "real-store"
    real.mkdir(mode=0o700)
    link = tmp_path / "store-link"
    link.symlink_to(real, target_is_directory=True)
    root_fd = open_dir(drop)
    try:
        for create in (True, False):
            with pytest.raises(QuarantineError, match="symbolic link"):
                QuarantineStore.open(link, same_fs_as_fd=root_fd, create=create)
    finally:
        os.close(root_fd)


@pytest.mark.parametrize("mode", [0o770, 0o750, 0o705, 0o701])
def test_refuses_a_store_open_to_group_or_others(tmp_path: Path, mode: int):
    path = tmp_path / "store"
    path.mkdir()
    os.chmod(path, mode)
    with pytest.raises(QuarantineError, match="private"):
        QuarantineStore.open(path, same_fs_as_fd=None, create=True)
    assert _mode(path) == mode  # never "fixed" silently


@pytest.mark.skipif(not IS_ROOT, reason="needs root to give a directory to another uid")
def test_refuses_a_store_owned_by_someone_else(tmp_path: Path):
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    os.chown(path, 4321, 4321)
    with pytest.raises(QuarantineError, match="owned by uid 4321"):
        QuarantineStore.open(path, same_fs_as_fd=None, create=False)


def test_refuses_a_store_whose_parent_others_can_write(tmp_path: Path):
    parent = tmp_path / "shared"
    parent.mkdir()
    os.chmod(parent, 0o777)
    with pytest.raises(QuarantineError, match="rename or replace"):
        QuarantineStore.open(parent / "store", same_fs_as_fd=None, create=True)
    os.chmod(parent, 0o1777)  # sticky: others cannot rename what is ours
    QuarantineStore.open(parent / "store", same_fs_as_fd=None, create=True).close()


def test_refuses_a_store_on_another_file_system_than_the_watch(tmp_path: Path, drop: Path):
    # /proc is always another file system: its fd stands in for a watch directory elsewhere.
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert os.fstat(proc_fd).st_dev != os.stat(tmp_path).st_dev
        with pytest.raises(QuarantineError, match="another file system"):
            QuarantineStore.open(tmp_path / "store", same_fs_as_fd=proc_fd, create=True)
    finally:
        os.close(proc_fd)
    root_fd = open_dir(drop)
    try:
        QuarantineStore.open(tmp_path / "store", same_fs_as_fd=root_fd, create=True).close()
    finally:
        os.close(root_fd)


def test_refuses_a_store_in_dev_shm_for_a_watch_elsewhere(tmp_path: Path, drop: Path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is not a separate file system here")
    path = shm / f"dropwarden-test-{os.getpid()}-{tmp_path.name}"
    root_fd = open_dir(drop)
    try:
        with pytest.raises(QuarantineError, match="another file system"):
            QuarantineStore.open(path, same_fs_as_fd=root_fd, create=True)
    finally:
        os.close(root_fd)
        if path.is_dir():
            path.rmdir()


def test_default_quarantine_dir():
    named = WatchSettings(path=Path("/srv/drops/inbox"), name="inbox")
    assert default_quarantine_dir(named) == Path("/srv/drops/.dropwarden-quarantine/inbox")
    unnamed = WatchSettings(path=Path("/srv/drops/inbox"))
    location = default_quarantine_dir(unnamed)
    assert location.parent == Path("/srv/drops/.dropwarden-quarantine")
    assert "/" not in location.name and not location.name.startswith(".")
    other = WatchSettings(path=Path("/srv/drops_inbox"))
    assert default_quarantine_dir(other).name != location.name
    explicit = WatchSettings(path=Path("/srv/in"), quarantine_dir=Path("/var/lib/dropwarden/q"))
    assert default_quarantine_dir(explicit) == Path("/var/lib/dropwarden/q")


# ------------------------------------------------------------------------------------- restore, purge


def test_restore_round_trip_to_the_original_path(store: QuarantineStore, drop: Path):
    relative = b"dir \xe9\n/" + ODD_NAME
    full = put_file(drop, relative, mode=0o640)
    if IS_ROOT:
        os.chown(full, 4321, 8765)
    item_id, _, _ = quarantine(store, drop, relative)
    os.chmod(store.path / item_id, 0o600)  # whatever happened to it inside the store
    if IS_ROOT:
        os.chown(store.path / item_id, 0, 0)
    assert not os.path.lexists(full)

    restored = store.restore(item_id, None)

    assert os.fsencode(restored) == full
    with open(full, "rb") as handle:
        assert handle.read() == SECRET
    assert _mode(full) == 0o640
    if IS_ROOT:
        assert (os.stat(full).st_uid, os.stat(full).st_gid) == (4321, 8765)
    assert os.listdir(store.path) == []  # file and sidecar both gone


def test_restore_into_another_directory(store: QuarantineStore, drop: Path, tmp_path: Path):
    item_id, _, _ = quarantine(store, drop, b"sub/" + ODD_NAME)
    target = tmp_path / "review"
    target.mkdir()
    restored = store.restore(item_id, target)
    assert os.fsencode(restored) == _bpath(target, ODD_NAME)
    with open(_bpath(target, ODD_NAME), "rb") as handle:
        assert handle.read() == SECRET
    assert not os.path.lexists(_bpath(drop, b"sub", ODD_NAME))
    assert os.listdir(store.path) == []


def test_restore_to_another_file_system_copies_and_verifies(
    store: QuarantineStore, drop: Path, tmp_path: Path
):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is not a separate file system here")
    target = shm / f"dropwarden-test-{os.getpid()}-{tmp_path.name}"
    target.mkdir()
    try:
        put_file(drop, b"card.txt", mode=0o604)
        mtime_ns = os.stat(drop / "card.txt").st_mtime_ns
        item_id, _, _ = quarantine(store, drop, b"card.txt")
        (target / "card.txt").write_bytes(b"already here")
        with pytest.raises(QuarantineError, match="destination exists"):
            store.restore(item_id, target)
        assert (target / "card.txt").read_bytes() == b"already here" and store.has_item(item_id)
        (target / "card.txt").unlink()

        assert store.restore(item_id, target) == target / "card.txt"
        assert (target / "card.txt").read_bytes() == SECRET
        assert _mode(target / "card.txt") == 0o604
        assert os.stat(target / "card.txt").st_mtime_ns == mtime_ns
        assert os.listdir(store.path) == []
    finally:
        for child in target.iterdir():
            child.unlink()
        target.rmdir()


def test_restore_refuses_an_existing_destination_and_touches_nothing(store: QuarantineStore, drop: Path):
    item_id, _, _ = quarantine(store, drop, ODD_NAME)
    full = put_file(drop, ODD_NAME, b"a new file with the same name", mode=0o600)
    listing = sorted(os.listdir(store.path))
    sidecar = (store.path / f"{item_id}.json").read_bytes()

    with pytest.raises(QuarantineError, match="destination exists"):
        store.restore(item_id, None)

    with open(full, "rb") as handle:
        assert handle.read() == b"a new file with the same name"
    assert _mode(full) == 0o600
    assert sorted(os.listdir(store.path)) == listing
    assert (store.path / item_id).read_bytes() == SECRET
    assert (store.path / f"{item_id}.json").read_bytes() == sidecar


def test_restore_refuses_altered_bytes(store: QuarantineStore, drop: Path):
    item_id, _, _ = quarantine(store, drop, b"card.txt")
    with open(store.path / item_id, "r+b") as handle:  # same size, different bytes
        handle.write(b"X")
    with pytest.raises(QuarantineError, match="altered"):
        store.restore(item_id, None)
    assert not (drop / "card.txt").exists()
    assert store.has_item(item_id) and store.has_sidecar(item_id)


def test_restore_does_not_follow_a_symlink_planted_on_the_way(store: QuarantineStore, drop: Path, tmp_path):
    item_id, _, _ = quarantine(store, drop, b"sub/card.txt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (drop / "sub").rmdir()
    (drop / "sub").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(QuarantineError, match="symbolic link"):
        store.restore(item_id, None)
    assert os.listdir(elsewhere) == []
    assert store.has_item(item_id)


def test_purge_removes_file_and_sidecar(store: QuarantineStore, drop: Path):
    item_id, _, _ = quarantine(store, drop, b"card.txt")
    other, _, _ = quarantine(store, drop, b"other.txt")
    store.purge(item_id)
    assert not store.has_item(item_id) and not store.has_sidecar(item_id)
    assert sorted(os.listdir(store.path)) == sorted([other, f"{other}.json"])
    with pytest.raises(QuarantineError):
        store.purge(item_id)


def test_ids_are_checked_before_touching_the_file_system(store: QuarantineStore):
    for bad in ("../etc/passwd", "x" * 32, "0" * 31, "0" * 32 + "\n"):
        with pytest.raises(QuarantineError, match="not a quarantine id"):
            store.read_sidecar(bad)
        with pytest.raises(QuarantineError):
            store.purge(bad)


# ----------------------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli_setup(tmp_path: Path, drop: Path, write_config):
    qdir = tmp_path / "q" / "inbox"
    config = write_config(f'[[watch]]\nname = "inbox"\npath = "{drop}"\nquarantine_dir = "{qdir}"\n')
    root_fd = open_dir(drop)
    opened = QuarantineStore.open(qdir, same_fs_as_fd=root_fd, create=True)
    os.close(root_fd)
    yield config, opened
    opened.close()


def audit_records(tmp_path: Path, type_: str) -> list[dict]:
    path = tmp_path / "audit.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    return [r for r in records if r["type"] == type_]


def test_cli_list_show_restore(cli_setup, drop: Path, tmp_path: Path):
    config, store = cli_setup
    relative = b"sub/" + ODD_NAME
    full = put_file(drop, relative, mode=0o640)
    item_id, _, _ = quarantine(store, drop, relative)

    result = run_cli("quarantine", "list", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    (item,) = json.loads(result.stdout)
    assert item["id"] == item_id and item["watch"] == "inbox" and item["sidecar"] is True
    assert base64.b64decode(item["original_path_b64"]) == full

    result = run_cli("quarantine", "list", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert item_id in result.stdout and "report\\nfinal" in result.stdout

    result = run_cli("quarantine", "list", "--config", str(config), "--watch", "nope")
    assert result.returncode == 2 and "nope" in result.stderr

    result = run_cli("quarantine", "show", item_id, "--config", str(config))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["sha256"] == hashlib.sha256(SECRET).hexdigest() and shown["mode"] == "0640"

    result = run_cli("quarantine", "restore", item_id, "--config", str(config))
    assert result.returncode == 0, result.stderr
    with open(full, "rb") as handle:
        assert handle.read() == SECRET
    assert _mode(full) == 0o640
    assert os.listdir(store.path) == []

    restores = audit_records(tmp_path, "quarantine.restore")
    assert [r["body"]["phase"] for r in restores] == ["intent", "done"]
    done = restores[-1]["body"]
    assert done["id"] == item_id and done["watch"] == "inbox"
    assert done["sha256"] == hashlib.sha256(SECRET).hexdigest()
    assert done["destination"] == display_bytes(full) and done["intent_seq"] == restores[0]["seq"]
    assert b"4111 1111" not in (tmp_path / "audit.jsonl").read_bytes()  # no content in the audit log

    verify = run_cli("audit", "verify", str(tmp_path / "audit.jsonl"), "--config", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr

    result = run_cli("quarantine", "restore", item_id, "--config", str(config))
    assert result.returncode == 1 and "unknown quarantine id" in result.stderr


def test_cli_restore_refusals_exit_1_and_change_nothing(cli_setup, drop: Path, tmp_path: Path):
    config, store = cli_setup
    item_id, _, _ = quarantine(store, drop, b"card.txt")
    put_file(drop, b"card.txt", b"newer")

    result = run_cli("quarantine", "restore", item_id, "--config", str(config))
    assert result.returncode == 1 and "destination exists" in result.stderr
    assert (drop / "card.txt").read_bytes() == b"newer" and store.has_item(item_id)
    assert [r["body"]["phase"] for r in audit_records(tmp_path, "quarantine.restore")] == [
        "intent",
        "refused",
    ]

    target = tmp_path / "review"
    target.mkdir()
    with open(store.path / item_id, "ab") as handle:
        handle.write(b"tampered")
    result = run_cli("quarantine", "restore", item_id, "--to", str(target), "--config", str(config))
    assert result.returncode == 1 and "altered" in result.stderr
    assert os.listdir(target) == [] and store.has_item(item_id)

    assert run_cli("quarantine", "show", "0" * 32, "--config", str(config)).returncode == 1
    assert run_cli("quarantine", "show", "../../etc", "--config", str(config)).returncode == 2


def test_cli_refuses_to_act_without_the_audit_log(cli_setup, drop: Path, tmp_path: Path, state_dir: Path):
    config, store = cli_setup
    item_id, _, _ = quarantine(store, drop, b"card.txt")
    # A process that holds the log and never answers the spool: a hung daemon.
    held = AuditLog.open(tmp_path / "audit.jsonl", state_dir, AuditSettings(), background=False)
    impatient = {"DROPWARDEN_AUDIT__SPOOL_TIMEOUT": "1"}
    try:
        result = run_cli("quarantine", "restore", item_id, "--config", str(config), env=impatient)
        assert result.returncode == 1 and "audit" in result.stderr
        result = run_cli("quarantine", "purge", item_id, "--yes", "--config", str(config), env=impatient)
        assert result.returncode == 1 and "audit" in result.stderr
    finally:
        held.close()
    assert not (drop / "card.txt").exists()
    assert store.has_item(item_id) and store.has_sidecar(item_id)
    assert audit_records(tmp_path, "quarantine.restore") == audit_records(tmp_path, "quarantine.purge") == []


def test_cli_purge(cli_setup, drop: Path, tmp_path: Path):
    config, store = cli_setup
    item_id, _, _ = quarantine(store, drop, b"card.txt")

    declined = subprocess.run(
        [sys.executable, "-m", "dropwarden", "quarantine", "purge", item_id, "--config", str(config)],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert declined.returncode == 1, declined.stderr
    assert store.has_item(item_id) and store.has_sidecar(item_id)

    result = run_cli("quarantine", "purge", item_id, "--yes", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert os.listdir(store.path) == []
    purges = audit_records(tmp_path, "quarantine.purge")
    assert [r["body"]["phase"] for r in purges] == ["intent", "done"]
    assert purges[-1]["body"]["id"] == item_id
    assert purges[-1]["body"]["sha256"] == hashlib.sha256(SECRET).hexdigest()
