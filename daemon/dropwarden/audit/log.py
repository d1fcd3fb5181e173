"""The audit log writer: one locked appender, fsync policy, checkpoints, the anchor, torn-tail repair."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from dropwarden.audit import store
from dropwarden.audit.chain import (
    CHECKPOINT,
    FORMAT,
    GENESIS_PREV,
    OPEN,
    REPAIR,
    RESERVED_TYPES,
    RESUME,
    AuditError,
    AuditLocked,
    ChainChecker,
    Damage,
    canonical,
    checkpoint_mac,
    evolve,
    evolve_to,
    iter_lines,
    key_id,
    new_log_advice,
    utc_now,
)
from dropwarden.audit.store import anchored_checkpoint
from dropwarden.config import AuditSettings
from dropwarden.keys import load_or_create_key

_CREATE_EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
BATCH_WINDOW = 0.02  # fsync=batch: at most one fsync per this many seconds, unless sync() is called
# The anchor names the durable head: rewritten at most this often (and at every checkpoint). Each
# rewrite costs a flush, on top of the log's own fdatasync: 0.1 s keeps that to 10 a second.
ANCHOR_WINDOW = 0.1


class _Tip(NamedTuple):
    """The end of what was written, consistently: next seq, head hash, size, the last checkpoint."""

    next_seq: int
    head: str
    size: int
    checkpoint: dict[str, Any] | None


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    time: str
    type: str
    body: dict[str, Any]
    prev: str
    hash: str


class AuditLog:
    """The single writer of one audit log. Thread-safe; use `open`, then `append`/`append_many`, `close`."""

    def __init__(self, path: Path, state_dir: Path, settings: AuditSettings, fd: int) -> None:
        self.path = path
        self.state_dir = state_dir
        self.settings = settings
        self._fd = fd
        self._lock = threading.RLock()  # record building, writing, checkpoints
        self._sync_lock = threading.Lock()  # one fsync at a time; waiters share its result (group commit)
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._closed = False
        self._broken: BaseException | None = None
        self.log_id = ""
        self._next_seq = 0
        self._head = ""
        self._size = 0
        self._epoch = 0
        self._key = b""
        self._written = 0  # records written (next seq)
        self._synced = 0  # records known durable
        self._last_sync = time.monotonic()
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._key_id = ""
        self._checkpoint_info: dict[str, Any] | None = None  # the last checkpoint: seq, hash, epoch, offset
        self._tip = _Tip(0, GENESIS_PREV, 0, None)
        self._synced_tip: _Tip | None = None  # the newest tip known durable
        self._anchor_lock = threading.Lock()
        self._anchored_next = 0  # records below this seq are named by the anchor
        self._last_anchor = 0.0
        self._anchor_kicked = False
        self._anchor: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------------------- opening

    @classmethod
    def open(
        cls, path: Path, state_dir: Path, settings: AuditSettings, *, background: bool = True
    ) -> AuditLog:
        """Open (or create) the log, take its lock, repair a torn tail, and write `log.open`/`log.resume`
        plus a checkpoint. Raises AuditLocked on a lock held elsewhere; AuditError on damage or without a
        usable key.

        `background` starts a thread that does the time-based work of `tick()` (batch fsync, interval
        checkpoints); without it the caller calls `tick()` itself."""
        path, state_dir = Path(path).absolute(), Path(state_dir)
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
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
            log = cls(path, state_dir, settings, fd)
            log._recover()
        except BaseException:
            os.close(fd)
            raise
        if background:
            log._thread = threading.Thread(target=log._run, name="audit-log", daemon=True)
            log._thread.start()
        return log

    def _recover(self) -> None:
        size = os.fstat(self._fd).st_size
        end = self._complete_end(size)
        anchor = store.read_json(store.anchor_path(self.state_dir), "audit anchor")
        checker = None
        if end:
            with os.fdopen(os.dup(self._fd), "rb") as handle:
                checker = self._check_existing(handle, end, size, anchor)
        # Nothing has been modified up to here: damage raises before any repair.
        if checker is None:
            self.log_id = secrets.token_hex(16)
            self._key, self._epoch, self._key_id = self._chain_key(anchor)
            self._next_seq, self._head = 0, GENESIS_PREV
            self._save_key(scrub=True)
        else:
            assert checker.log_id is not None and checker.last is not None
            self.log_id, self._key_id = checker.log_id, checker.key_id or ""
            self._key, self._epoch = self._reconcile_key(checker)
            self._next_seq, self._head = checker.next_seq, checker.last["hash"]
        repair = self._set_aside(end, size) if size > end else None
        self._size = end
        self._written = self._synced = self._next_seq
        self._tip = _Tip(self._next_seq, self._head, end, None)
        with self._lock:
            if checker is None:
                body: dict[str, Any] = {"format": FORMAT, "log_id": self.log_id, "key_id": self._key_id}
                if self._epoch:
                    body["key_epoch"] = self._epoch
                if anchor and {"log_id", "seq", "hash"} <= set(anchor):
                    body["previous"] = {k: anchor[k] for k in ("log_id", "seq", "hash")}
                self._append_locked([(OPEN, body)])
                self._sync_upto(self._written)
                store.fsync_dir(self.path.parent)
            else:
                last = checker.last
                clean = last["type"] == CHECKPOINT and last["body"].get("reason") == "close" and not repair
                self._append_locked([(RESUME, {"previous_close": "clean" if clean else "unclean"})])
            if repair:
                self._append_locked([(REPAIR, repair)])
            self._checkpoint_locked("open")

    def _complete_end(self, size: int) -> int:
        """Offset just past the last newline (0 when there is none)."""
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            chunk = os.pread(self._fd, pos - start, start)
            index = chunk.rfind(b"\n")
            if index >= 0:
                return start + index + 1
            pos = start
        return 0

    def _check_existing(
        self, handle: Any, end: int, size: int, anchor: dict[str, Any] | None
    ) -> ChainChecker:
        """Check the complete lines: all of them, or those from the anchored checkpoint on when the anchor
        belongs to this log (`audit verify` checks everything); the log must reach the anchored head,
        unchanged. Raises AuditError on damage."""
        checker = ChainChecker()
        first = handle.readline()
        try:
            checker.feed(first.rstrip(b"\n"))
        except Damage as exc:
            raise self._damaged(f"line 1 (seq {exc.seq})", exc.message) from None
        start, line_no = len(first), 2
        head: tuple[int, str] | None = None
        if anchor and anchor.get("log_id") == checker.log_id:
            point = anchored_checkpoint(anchor)
            head_seq, head_hash = anchor.get("seq"), anchor.get("hash")
            if point is None or not isinstance(head_seq, int) or not isinstance(head_hash, str):
                raise AuditError(f"audit anchor {store.anchor_path(self.state_dir)} is malformed")
            head = head_seq, head_hash
            offset, seq, epoch = point["offset"], point["seq"], point["epoch"]
            if offset >= end:
                raise self._damaged(f"byte {end}", self._short_of(seq, end, size, f"checkpoint seq {seq}"))
            if offset >= start:
                checker.resume(checker.log_id, checker.key_id or "", seq, epoch)
                handle.seek(offset)
                line = handle.readline()
                try:
                    record = checker.feed(line.rstrip(b"\n"))
                except Damage as exc:
                    raise self._damaged(f"byte {offset} (seq {exc.seq})", exc.message) from None
                if record["hash"] != point["hash"]:
                    raise self._damaged(
                        f"byte {offset} (seq {seq})", "it differs from the anchored checkpoint"
                    )
                start, line_no = offset + len(line), 0
        for offset, line in iter_lines(handle, start):
            if offset >= end:
                break
            where = f"line {line_no}" if line_no else f"byte {offset}"
            try:
                record = checker.feed(line.rstrip(b"\n"))
            except Damage as exc:
                raise self._damaged(f"{where} (seq {exc.seq})", exc.message) from None
            if head is not None and record["seq"] == head[0] and record["hash"] != head[1]:
                raise self._damaged(
                    f"{where} (seq {head[0]})",
                    "it differs from the record the anchor names: the log was rewritten up to here",
                )
            line_no = line_no + 1 if line_no else 0
        if head is not None and checker.next_seq <= head[0]:
            raise self._damaged(f"byte {end}", self._short_of(head[0], end, size, f"seq {head[0]}"))
        return checker

    def _short_of(self, seq: int, end: int, size: int, what: str) -> str:
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

    def _damaged(self, where: str, message: str) -> AuditError:
        return AuditError(
            f"audit log {self.path} is damaged at {where}: {message}. It is not repaired automatically;"
            f" {new_log_advice(str(self.path))}"
        )

    def _reconcile_key(self, checker: ChainChecker) -> tuple[bytes, int]:
        """The key for the next checkpoint (the epoch after the log's last one), from the key file or
        from K_0."""
        needed = checker.epoch
        state = store.read_json(store.current_key_path(self.state_dir), "audit key state")
        if state and state.get("log_id") == self.log_id:
            try:
                key, epoch = bytes.fromhex(state["key"]), int(state["epoch"])
            except (KeyError, TypeError, ValueError):
                where = store.current_key_path(self.state_dir)
                raise AuditError(f"audit key state {where} is malformed") from None
            if epoch > needed:
                raise self._damaged(
                    "its end",
                    f"the checkpoint key is at epoch {epoch} but the log holds only {needed} checkpoints:"
                    " checkpoints were removed from its tail",
                )
        else:
            try:
                k0 = store.read_key_file(store.k0_path(self.state_dir))
            except (OSError, ValueError):
                k0 = None
            if k0 is None or key_id(k0) != checker.key_id:
                raise AuditError(
                    f"no checkpoint key for audit log {self.path} (log_id {self.log_id}):"
                    f" {store.current_key_path(self.state_dir)} is missing or belongs to another log, and"
                    f" {store.k0_path(self.state_dir)} is not this log's K_0. Move the log aside to start a"
                    " new one, or restore the key files"
                )
            key, epoch = k0, 0
        changed = state is None or state.get("log_id") != self.log_id or epoch != needed
        while epoch < needed:
            key, epoch = evolve(key), epoch + 1
        if changed:
            self._key, self._epoch = key, epoch
            self._save_key(scrub=True)
        return key, epoch

    def _chain_key(self, anchor: dict[str, Any] | None) -> tuple[bytes, int, str]:
        """(key, epoch, key id) for a new log: the key chain goes on from the previous log's evolved key,
        so K_0 is not needed on the host again; a new K_0 only when no key state is left."""
        state = store.read_json(store.current_key_path(self.state_dir), "audit key state")
        if state is not None:
            try:
                key, epoch = bytes.fromhex(state["key"]), int(state["epoch"])
            except (KeyError, TypeError, ValueError):
                where = store.current_key_path(self.state_dir)
                raise AuditError(f"audit key state {where} is malformed") from None
            root = state.get("key_id")
            if not isinstance(root, str):  # written before key ids were kept: K_0 may still say
                root = self._root_of(key, epoch)
            if root is not None:
                # The previous log may have anchored a checkpoint at this epoch and stopped before its
                # key moved on: never reuse an epoch.
                point = anchored_checkpoint(anchor) if anchor else None
                if (
                    anchor
                    and anchor.get("log_id") == state.get("log_id")
                    and point
                    and point["epoch"] >= epoch
                ):
                    key, epoch = evolve_to(key, point["epoch"] + 1 - epoch), point["epoch"] + 1
                return key, epoch, root
        k0 = load_or_create_key(self.state_dir, store.K0_NAME)
        return k0, 0, key_id(k0)

    def _root_of(self, key: bytes, epoch: int) -> str | None:
        try:
            k0 = store.read_key_file(store.k0_path(self.state_dir))
        except (OSError, ValueError):
            return None
        return key_id(k0) if evolve_to(k0, epoch) == key else None

    def _save_key(self, *, scrub: bool) -> None:
        data = {"log_id": self.log_id, "key_id": self._key_id, "epoch": self._epoch, "key": self._key.hex()}
        store.write_json(store.current_key_path(self.state_dir), data, scrub_old=scrub)

    def _set_aside(self, end: int, size: int) -> dict[str, Any]:
        """Copy the torn tail to `<log>.torn-<UTC time>`, then truncate the log to its last complete line."""
        torn = os.pread(self._fd, size - end, end)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        for attempt in range(100):
            aside = self.path.with_name(f"{self.path.name}.torn-{stamp}" + (f".{attempt}" if attempt else ""))
            try:
                fd = os.open(aside, _CREATE_EXCL, 0o600)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise AuditError(f"cannot set the torn tail of {self.path} aside: {exc.strerror}") from None
        else:
            raise AuditError(f"cannot create a file beside {self.path} for its torn tail")
        try:
            try:
                view = memoryview(torn)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            store.fsync_dir(self.path.parent)
        except OSError as exc:
            # A full disk: leave no empty or partial copy behind; the next open tries again.
            aside.unlink(missing_ok=True)
            raise AuditError(f"cannot set the torn tail of {self.path} aside: {exc.strerror}") from None
        os.ftruncate(self._fd, end)
        os.fsync(self._fd)
        return {
            "bytes": len(torn),
            "sha256": hashlib.sha256(torn).hexdigest(),
            "set_aside": str(aside),
            "offset": end,
        }

    # ----------------------------------------------------------------------------------------- writing

    def append(self, type: str, body: dict[str, Any]) -> AuditRecord:
        """Append one record; with fsync=always it is durable when this returns."""
        return self.append_many([(type, body)])[0]

    def append_many(self, items: Iterable[tuple[str, dict[str, Any]]]) -> list[AuditRecord]:
        """Append records with one write (and, with fsync=always, one fsync). ValueError/TypeError on a
        reserved type or a body that is not JSON (NaN, bytes, lone surrogates…); nothing is written then."""
        prepared = [(_check_type(kind), _normalise(body)) for kind, body in items]
        batch = self.settings.fsync == "batch"
        with self._lock:
            self._usable()
            idle = self._since_checkpoint == 0 or (batch and self._synced >= self._written)
            records = self._append_locked(prepared)
            self._since_checkpoint += len(records)
            if self.settings.fsync == "always":
                self._sync_upto(self._written)
            if self._since_checkpoint >= self.settings.checkpoint_every:
                self._checkpoint_locked("count")
        # With the background thread running, it does the batch fsync: appenders never wait for a disk.
        if batch and self._thread is None and time.monotonic() - self._last_sync >= BATCH_WINDOW:
            self._sync_upto(self._written, BATCH_WINDOW)
        if idle:
            self._kick.set()  # the background thread now has a deadline to keep
        return records

    def sync(self) -> None:
        """Make every record appended so far durable (fsync=always/batch; a no-op with fsync=never).
        Concurrent callers share one fsync: the daemon's group commit."""
        if self.settings.fsync != "never":
            self._usable()
            self._sync_upto(self._written)

    def checkpoint(self) -> AuditRecord:
        """Write a checkpoint now (fsynced; anchor updated; key evolved)."""
        with self._lock:
            self._usable()
            return self._checkpoint_locked("manual")

    def tick(self) -> None:
        """Time-based duties (the background thread calls this): batch fsync, anchoring the durable
        head, interval checkpoints."""
        now = time.monotonic()
        pending = self._synced < self._written
        if self.settings.fsync == "batch" and pending and now - self._last_sync >= BATCH_WINDOW:
            self._usable()
            self._sync_upto(self._written, BATCH_WINDOW)
        if self._unanchored():
            self._usable()
            self._anchor_durable()
        if self._since_checkpoint and now - self._last_checkpoint >= self.settings.checkpoint_interval:
            with self._lock:
                if self._since_checkpoint and not self._closed:
                    self._usable()
                    self._checkpoint_locked("interval")

    def close(self) -> None:
        """Write a final checkpoint (fsynced) and release the lock. Idempotent."""
        if self._closed:
            return
        self._closing = True
        self._kick.set()
        if self._thread is not None:
            self._thread.join()
        try:
            with self._lock:
                if self._broken is None:
                    self._checkpoint_locked("close")
        finally:
            self._closed = True
            os.close(self._fd)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def broken(self) -> str | None:
        """Why the log cannot take appends any more (a failed write or fsync, or closed), or None."""
        if self._broken is not None:
            return str(self._broken)
        return "closed" if self._closed else None

    @property
    def moved(self) -> bool:
        """Whether `path` no longer names the file this log writes: renamed away by log rotation, or
        deleted. The writer then closes it and opens a new log at `path` (see `AuditLog.open`: its
        first record names the last checkpoint of this one)."""
        try:
            named = os.stat(self.path, follow_symlinks=False)
            mine = os.fstat(self._fd)
        except FileNotFoundError:
            return not self._closed
        except OSError:  # closed meanwhile, or the folder unreadable: nothing to follow
            return False
        return (named.st_dev, named.st_ino) != (mine.st_dev, mine.st_ino)

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    @property
    def head(self) -> dict[str, Any]:
        """The chain head as appended so far (not necessarily durable): log_id, seq, hash."""
        tip = self._tip
        return {"log_id": self.log_id, "seq": tip.next_seq - 1, "hash": tip.head}

    def durable_head(self) -> dict[str, Any]:
        """Make every record appended so far durable (as `sync`) and return the head that is: log_id,
        seq, hash. A copy of it kept off the host proves that the log reached that record. When the
        fsync fails, the newest head that was durable before; with fsync=never nothing is synced and the
        head appended so far is returned."""
        try:
            self.sync()
        except AuditError:
            pass  # the log is broken: the caller finds out on its next append
        tip = self._synced_tip
        if self.settings.fsync == "never" or tip is None:
            return self.head
        return {"log_id": self.log_id, "seq": tip.next_seq - 1, "hash": tip.head}

    @property
    def anchored(self) -> dict[str, Any] | None:
        """What the anchor file says now (the head it names, the last checkpoint), or None before the
        first checkpoint of this log."""
        return dict(self._anchor) if self._anchor is not None else None

    # ----------------------------------------------------------------------------------------- internals

    def _usable(self) -> None:
        if self._closed:
            raise AuditError(f"audit log {self.path} is closed")
        if self._broken is not None:
            raise AuditError(
                f"audit log {self.path} is unusable after a failed write or fsync ({self._broken}); reopen it"
                " (a torn last line is then set aside and recorded)"
            )

    def _append_locked(self, items: list[tuple[str, dict[str, Any]]]) -> list[AuditRecord]:
        records, lines = [], []
        seq, head = self._next_seq, self._head
        for kind, body in items:
            fields = {"seq": seq, "time": utc_now(), "type": kind, "body": body, "prev": head}
            if kind == CHECKPOINT:
                body["mac"] = checkpoint_mac(self._key, fields)
            head, line = _seal(fields)
            lines.append(line)
            records.append(AuditRecord(seq, fields["time"], kind, body, fields["prev"], head))
            seq += 1
        self._write(b"".join(lines))
        self._next_seq, self._head = seq, head
        self._written = seq
        last = records[-1]
        if last.type == CHECKPOINT:
            offset = self._size - len(lines[-1])
            self._checkpoint_info = {
                "seq": last.seq,
                "hash": last.hash,
                "epoch": last.body["epoch"],
                "offset": offset,
            }
        self._tip = _Tip(seq, head, self._size, self._checkpoint_info)
        return records

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self._broken = exc
            raise AuditError(f"cannot write audit log {self.path}: {exc.strerror}") from None
        self._size += len(data)

    def _sync_upto(self, target: int, window: float = 0.0) -> None:
        """fsync unless records up to `target` are durable already (or, given a `window`, unless the
        last fsync is more recent than that: the batch rate limit)."""
        with self._sync_lock:
            if self._synced >= target or (window and time.monotonic() - self._last_sync < window):
                return
            tip = self._tip
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self._broken = exc
                raise AuditError(f"cannot fsync audit log {self.path}: {exc.strerror}") from None
            self._synced_tip = tip
            self._synced, self._last_sync = tip.next_seq, time.monotonic()
        if self._thread is not None and not self._anchor_kicked:
            self._anchor_kicked = True
            self._kick.set()  # the background thread anchors the new durable head

    def _anchor_durable(self, *, force: bool = False) -> None:
        """Point the anchor at the durable head (and the last checkpoint), at most every ANCHOR_WINDOW
        unless forced. The anchor never names a record that a crash could take back."""
        tip = self._synced_tip
        if tip is None or tip.checkpoint is None:
            return
        with self._anchor_lock:
            if tip.next_seq <= self._anchored_next:
                return
            if not force and time.monotonic() - self._last_anchor < ANCHOR_WINDOW:
                return
            anchor = {
                "log_id": self.log_id,
                "path": str(self.path),
                "seq": tip.next_seq - 1,
                "hash": tip.head,
                "checkpoint": tip.checkpoint,
                "time": utc_now(),
            }
            try:
                # A head lost with the rename in a crash leaves the previous anchor: a lower bound, still
                # true. A checkpoint's anchor is made durable before its key is evolved away.
                store.write_json(store.anchor_path(self.state_dir), anchor, mode=0o640, sync_dir=force)
            except OSError as exc:
                self._broken = exc
                raise AuditError(f"cannot update the audit anchor in {self.state_dir}: {exc}") from None
            self._anchor, self._anchored_next, self._last_anchor = anchor, tip.next_seq, time.monotonic()

    def _checkpoint_locked(self, reason: str) -> AuditRecord:
        body = {"epoch": self._epoch, "log_id": self.log_id, "reason": reason}
        record = self._append_locked([(CHECKPOINT, body)])[0]
        try:
            self._sync_upto(self._written)
            self._anchor_durable(force=True)  # names this checkpoint (or a later head) before the key moves
            self._key, self._epoch = evolve(self._key), self._epoch + 1
            self._save_key(scrub=True)
        except OSError as exc:
            self._broken = exc
            raise AuditError(f"cannot complete an audit checkpoint in {self.state_dir}: {exc}") from None
        self._since_checkpoint, self._last_checkpoint = 0, time.monotonic()
        return record

    def _run(self) -> None:
        while not self._closing:
            self._kick.clear()
            self._anchor_kicked = False
            try:
                self.tick()
            except Exception as exc:  # the log is poisoned; appends report it to the caller
                if self._broken is None:
                    self._broken = exc
                return
            self._kick.wait(self._next_wait())

    def _next_wait(self) -> float | None:
        now, waits = time.monotonic(), []
        if self.settings.fsync == "batch" and self._synced < self._written:
            waits.append(self._last_sync + BATCH_WINDOW - now)
        if self._since_checkpoint:
            waits.append(self._last_checkpoint + self.settings.checkpoint_interval - now)
        if self._unanchored():
            waits.append(self._last_anchor + ANCHOR_WINDOW - now)
        return max(0.001, min(waits)) if waits else None

    def _unanchored(self) -> bool:
        tip = self._synced_tip
        return tip is not None and tip.checkpoint is not None and tip.next_seq > self._anchored_next


def _seal(fields: dict[str, Any]) -> tuple[str, bytes]:
    """(hash, line): the canonical record with its hash spliced in. Sorted keys put `hash` right before
    `prev`, and everything from `prev` on is known, so one serialisation serves both."""
    unsigned = canonical(fields)
    digest = hashlib.sha256(unsigned).hexdigest()
    tail = canonical({k: fields[k] for k in ("prev", "seq", "time", "type")})[1:]
    assert unsigned.endswith(b"," + tail)
    cut = len(unsigned) - len(tail)
    return digest, unsigned[:cut] + b'"hash":"' + digest.encode() + b'",' + tail + b"\n"


def _check_type(kind: str) -> str:
    if not isinstance(kind, str) or not kind:
        raise ValueError("an audit record type is a non-empty string")
    if kind in RESERVED_TYPES:
        raise ValueError(f"audit record type {kind!r} is reserved for the log itself")
    return kind


def _normalise(body: dict[str, Any]) -> dict[str, Any]:
    """The body as it will read back (tuples become lists); ValueError/TypeError when it is not JSON."""
    if not isinstance(body, dict):
        raise TypeError("an audit record body is a dict")
    return json.loads(canonical(body))
