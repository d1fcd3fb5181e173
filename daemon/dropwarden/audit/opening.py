"""Opening an audit log: take its lock, check what is there against the anchor, find the checkpoint key,
set a torn tail aside; `AuditLog.open` then writes the records that say so."""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from dropwarden.audit import store
from dropwarden.audit.chain import (
    CHECKPOINT,
    FORMAT,
    GENESIS_PREV,
    OPEN,
    RESUME,
    AuditError,
    AuditLocked,
    ChainChecker,
    Damage,
    evolve,
    evolve_to,
    iter_lines,
    key_id,
    new_log_advice,
)
from dropwarden.audit.store import anchored_checkpoint
from dropwarden.keys import load_or_create_key

_CREATE_EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Recovered:
    """Where the writer goes on from: the log's identity, the key for its next checkpoint, its chain
    head, and the bookkeeping records to write first (log.open or log.resume, then audit.repair)."""

    log_id: str
    key_id: str
    key: bytes
    epoch: int  # the epoch of `key`: the next checkpoint's
    next_seq: int
    head: str
    end: int  # the log's size, a torn tail cut off
    first: tuple[str, dict[str, Any]]  # (OPEN, body) for a new log, (RESUME, body) for one that goes on
    repair: dict[str, Any] | None  # the audit.repair body when a torn tail was set aside

    @property
    def new(self) -> bool:
        return self.first[0] == OPEN


def open_locked(path: Path) -> int:
    """The log's file descriptor (O_APPEND, created 0640 when missing), under an exclusive flock.
    AuditLocked when another writer holds it; AuditError when it cannot be opened or is no regular file."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o640)
    except OSError as exc:
        raise AuditError(f"cannot open audit log {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AuditError(f"audit log {path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AuditLocked(
                f"audit log {path} is locked by another writer (is another dropwarden running?)"
            ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def recover(fd: int, path: Path, state_dir: Path) -> Recovered:
    """Check the locked log `fd` (at `path`) and the key state in `state_dir`, bring the key file to the
    log's epoch (a new key chain, or K_0, only where the key state is gone), and set a torn tail aside.
    Raises AuditError on damage, before anything is modified."""
    size = os.fstat(fd).st_size
    end = _complete_end(fd, size)
    anchor = store.read_json(store.anchor_path(state_dir), "audit anchor")
    checker = None
    if end:
        with os.fdopen(os.dup(fd), "rb") as handle:
            checker = _check_existing(handle, path, state_dir, end, size, anchor)
    # Nothing has been modified up to here: damage raises before any repair.
    first: tuple[str, dict[str, Any]]
    if checker is None:
        log_id = secrets.token_hex(16)
        key, epoch, root = _chain_key(state_dir, anchor)
        next_seq, head = 0, GENESIS_PREV
        save_key(state_dir, log_id, root, epoch, key)
        body: dict[str, Any] = {"format": FORMAT, "log_id": log_id, "key_id": root}
        if epoch:
            body["key_epoch"] = epoch
        if anchor and {"log_id", "seq", "hash"} <= set(anchor):
            body["previous"] = {k: anchor[k] for k in ("log_id", "seq", "hash")}
        first = (OPEN, body)
    else:
        assert checker.log_id is not None and checker.last is not None
        log_id, root = checker.log_id, checker.key_id or ""
        key, epoch = _reconcile_key(checker, path, state_dir, log_id, root)
        next_seq, head = checker.next_seq, checker.last["hash"]
    repair = _set_aside(fd, path, end, size) if size > end else None
    if checker is not None:
        last = checker.last
        clean = last["type"] == CHECKPOINT and last["body"].get("reason") == "close" and not repair
        first = (RESUME, {"previous_close": "clean" if clean else "unclean"})
    return Recovered(log_id, root, key, epoch, next_seq, head, end, first, repair)


def save_key(state_dir: Path, log_id: str, root: str, epoch: int, key: bytes) -> None:
    """Replace the forward key state (the key for checkpoint `epoch` of the chain rooted at K_0 `root`),
    overwriting the old bytes."""
    data = {"log_id": log_id, "key_id": root, "epoch": epoch, "key": key.hex()}
    store.write_json(store.current_key_path(state_dir), data, scrub_old=True)


def _complete_end(fd: int, size: int) -> int:
    """Offset just past the last newline (0 when there is none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        index = chunk.rfind(b"\n")
        if index >= 0:
            return start + index + 1
        pos = start
    return 0


def _check_existing(
    handle: BinaryIO, path: Path, state_dir: Path, end: int, size: int, anchor: dict[str, Any] | None
) -> ChainChecker:
    """Check the complete lines: all of them, or those from the anchored checkpoint on when the anchor
    belongs to this log (`audit verify` checks everything); the log must reach the anchored head,
    unchanged. Raises AuditError on damage."""
    checker = ChainChecker()
    first = handle.readline()
    try:
        checker.feed(first.rstrip(b"\n"))
    except Damage as exc:
        raise _damaged(path, f"line 1 (seq {exc.seq})", exc.message) from None
    start, line_no = len(first), 2
    head: tuple[int, str] | None = None
    if anchor and anchor.get("log_id") == checker.log_id:
        point = anchored_checkpoint(anchor)
        head_seq, head_hash = anchor.get("seq"), anchor.get("hash")
        if point is None or not isinstance(head_seq, int) or not isinstance(head_hash, str):
            raise AuditError(f"audit anchor {store.anchor_path(state_dir)} is malformed")
        head = head_seq, head_hash
        offset, seq, epoch = point["offset"], point["seq"], point["epoch"]
        if offset >= end:
            raise _damaged(path, f"byte {end}", _short_of(seq, end, size, f"checkpoint seq {seq}"))
        if offset >= start:
            checker.resume(checker.log_id, checker.key_id or "", seq, epoch)
            handle.seek(offset)
            line = handle.readline()
            try:
                record = checker.feed(line.rstrip(b"\n"))
            except Damage as exc:
                raise _damaged(path, f"byte {offset} (seq {exc.seq})", exc.message) from None
            if record["hash"] != point["hash"]:
                raise _damaged(path, f"byte {offset} (seq {seq})", "it differs from the anchored checkpoint")
            start, line_no = offset + len(line), 0
    for offset, line in iter_lines(handle, start):
        if offset >= end:
            break
        where = f"line {line_no}" if line_no else f"byte {offset}"
        try:
            record = checker.feed(line.rstrip(b"\n"))
        except Damage as exc:
            raise _damaged(path, f"{where} (seq {exc.seq})", exc.message) from None
        if head is not None and record["seq"] == head[0] and record["hash"] != head[1]:
            raise _damaged(
                path,
                f"{where} (seq {head[0]})",
                "it differs from the record the anchor names: the log was rewritten up to here",
            )
        line_no = line_no + 1 if line_no else 0
    if head is not None and checker.next_seq <= head[0]:
        raise _damaged(path, f"byte {end}", _short_of(head[0], end, size, f"seq {head[0]}"))
    return checker


def _short_of(seq: int, end: int, size: int, what: str) -> str:
    """Why a log that ends before an anchored record is damaged: torn (bytes without a newline where
    the record was) or cut."""
    if size > end:
        return (
            f"the anchor names {what}, which was durable when it was anchored, but the log's last"
            f" {size - end} bytes, where it was, have no newline: the anchored record is torn (the"
            " storage lost written data, or the file was cut)"
        )
    return (
        f"the log ends before {what}, which the anchor names and which was durable when it was"
        " anchored: its tail was truncated"
    )


def _damaged(path: Path, where: str, message: str) -> AuditError:
    return AuditError(
        f"audit log {path} is damaged at {where}: {message}. It is not repaired automatically;"
        f" {new_log_advice(str(path))}"
    )


def _reconcile_key(
    checker: ChainChecker, path: Path, state_dir: Path, log_id: str, root: str
) -> tuple[bytes, int]:
    """The key for the next checkpoint (the epoch after the log's last one), from the key file or
    from K_0; the key file is brought to it."""
    needed = checker.epoch
    state = store.read_json(store.current_key_path(state_dir), "audit key state")
    if state and state.get("log_id") == log_id:
        try:
            key, epoch = bytes.fromhex(state["key"]), int(state["epoch"])
        except (KeyError, TypeError, ValueError):
            where = store.current_key_path(state_dir)
            raise AuditError(f"audit key state {where} is malformed") from None
        if epoch > needed:
            raise _damaged(
                path,
                "its end",
                f"the checkpoint key is at epoch {epoch} but the log holds only {needed} checkpoints:"
                " checkpoints were removed from its tail",
            )
    else:
        try:
            k0 = store.read_key_file(store.k0_path(state_dir))
        except (OSError, ValueError):
            k0 = None
        if k0 is None or key_id(k0) != checker.key_id:
            raise AuditError(
                f"no checkpoint key for audit log {path} (log_id {log_id}):"
                f" {store.current_key_path(state_dir)} is missing or belongs to another log, and"
                f" {store.k0_path(state_dir)} is not this log's K_0. Move the log aside to start a"
                " new one, or restore the key files"
            )
        key, epoch = k0, 0
    changed = state is None or state.get("log_id") != log_id or epoch != needed
    while epoch < needed:
        key, epoch = evolve(key), epoch + 1
    if changed:
        save_key(state_dir, log_id, root, epoch, key)
    return key, epoch


def _chain_key(state_dir: Path, anchor: dict[str, Any] | None) -> tuple[bytes, int, str]:
    """(key, epoch, key id) for a new log: the key chain goes on from the previous log's evolved key,
    so K_0 is not needed on the host again; a new K_0 only when no key state is left."""
    state = store.read_json(store.current_key_path(state_dir), "audit key state")
    if state is not None:
        try:
            key, epoch = bytes.fromhex(state["key"]), int(state["epoch"])
        except (KeyError, TypeError, ValueError):
            where = store.current_key_path(state_dir)
            raise AuditError(f"audit key state {where} is malformed") from None
        root = state.get("key_id")
        if not isinstance(root, str):  # written before key ids were kept: K_0 may still say
            root = _root_of(state_dir, key, epoch)
        if root is not None:
            # The previous log may have anchored a checkpoint at this epoch and stopped before its
            # key moved on: never reuse an epoch.
            point = anchored_checkpoint(anchor) if anchor else None
            if anchor and anchor.get("log_id") == state.get("log_id") and point and point["epoch"] >= epoch:
                key, epoch = evolve_to(key, point["epoch"] + 1 - epoch), point["epoch"] + 1
            return key, epoch, root
    k0 = load_or_create_key(state_dir, store.K0_NAME)
    return k0, 0, key_id(k0)


def _root_of(state_dir: Path, key: bytes, epoch: int) -> str | None:
    try:
        k0 = store.read_key_file(store.k0_path(state_dir))
    except (OSError, ValueError):
        return None
    return key_id(k0) if evolve_to(k0, epoch) == key else None


def _set_aside(fd: int, path: Path, end: int, size: int) -> dict[str, Any]:
    """Copy the torn tail to `<log>.torn-<UTC time>`, then truncate the log to its last complete line."""
    torn = os.pread(fd, size - end, end)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    for attempt in range(100):
        aside = path.with_name(f"{path.name}.torn-{stamp}" + (f".{attempt}" if attempt else ""))
        try:
            out = os.open(aside, _CREATE_EXCL, 0o600)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise AuditError(f"cannot set the torn tail of {path} aside: {exc.strerror}") from None
    else:
        raise AuditError(f"cannot create a file beside {path} for its torn tail")
    try:
        try:
            view = memoryview(torn)
            while view:
                view = view[os.write(out, view) :]
            os.fsync(out)
        finally:
            os.close(out)
        store.fsync_dir(path.parent)
    except OSError as exc:
        # A full disk: leave no empty or partial copy behind; the next open tries again.
        aside.unlink(missing_ok=True)
        raise AuditError(f"cannot set the torn tail of {path} aside: {exc.strerror}") from None
    os.ftruncate(fd, end)
    os.fsync(fd)
    return {
        "bytes": len(torn),
        "sha256": hashlib.sha256(torn).hexdigest(),
        "set_aside": str(aside),
        "offset": end,
    }
