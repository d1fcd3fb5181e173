"""The audit log writer: one locked appender, fsync policy, checkpoints, the anchor (opening: opening.py)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from dropwarden.audit import opening, store
from dropwarden.audit.chain import (
    CHECKPOINT,
    GENESIS_PREV,
    REPAIR,
    RESERVED_TYPES,
    AuditError,
    Damage,
    canonical,
    checkpoint_mac,
    evolve,
    parse_line,
    utc_now,
)
from dropwarden.config import AuditSettings

BATCH_WINDOW = 0.02  # fsync=batch: at most one fsync per this many seconds, unless sync() is called
# The anchor names the durable head: rewritten at most this often (and at every checkpoint). Each
# rewrite costs a flush, on top of the log's own fdatasync: 0.1 s keeps that to 10 a second.
ANCHOR_WINDOW = 0.1


Prepared = tuple[str, dict[str, Any], bytes]  # (type, body as it reads back, its canonical bytes)


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
        fd = opening.open_locked(path)
        try:
            log = cls(path, state_dir, settings, fd)
            log._start(opening.recover(fd, path, state_dir))
        except BaseException:
            os.close(fd)
            raise
        if background:
            log._thread = threading.Thread(target=log._run, name="audit-log", daemon=True)
            log._thread.start()
        return log

    def _start(self, found: opening.Recovered) -> None:
        """Go on from what `opening.recover` found: write log.open or log.resume, audit.repair when a
        torn tail was set aside, and the open checkpoint."""
        self.log_id, self._key_id = found.log_id, found.key_id
        self._key, self._epoch = found.key, found.epoch
        self._next_seq, self._head = found.next_seq, found.head
        self._size = found.end
        self._written = self._synced = self._next_seq
        self._tip = _Tip(self._next_seq, self._head, found.end, None)
        with self._lock:
            self._append_locked([found.first])
            if found.new:
                self._sync_upto(self._written)
                store.fsync_dir(self.path.parent)
            if found.repair:
                self._append_locked([(REPAIR, found.repair)])
            self._checkpoint_locked("open")

    # ----------------------------------------------------------------------------------------- writing

    def append(self, type: str, body: dict[str, Any]) -> AuditRecord:
        """Append one record; with fsync=always it is durable when this returns."""
        return self.append_many([(type, body)])[0]

    def append_many(self, items: Iterable[tuple[str, dict[str, Any]]]) -> list[AuditRecord]:
        """Append records with one write (and, with fsync=always, one fsync). ValueError/TypeError on a
        reserved type or a body that is not JSON (NaN, bytes, lone surrogates…); nothing is written then."""
        prepared = [(_check_type(kind), *_normalise(body)) for kind, body in items]
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

    def records_after(self, seq: int) -> list[dict[str, Any]]:
        """The records after `seq` in this log, oldest first, read back from its end (a restart asks
        which of the decisions its predecessor meant to record are in the log). A line that does not
        read back as a record ends the search: what is older is not returned."""
        with self._lock:
            self._usable()
            pos = self._size
            found: list[dict[str, Any]] = []
            partial = b""
            while pos > 0:
                start = max(0, pos - 65536)
                lines = (os.pread(self._fd, pos - start, start) + partial).split(b"\n")
                partial = lines.pop(0) if start > 0 else b""
                for raw in reversed(lines):
                    if not raw:
                        continue
                    try:
                        record = parse_line(raw)
                    except Damage:
                        return found[::-1]
                    if record["seq"] <= seq:
                        return found[::-1]
                    found.append(record)
                pos = start
            return found[::-1]

    # ----------------------------------------------------------------------------------------- internals

    def _usable(self) -> None:
        if self._closed:
            raise AuditError(f"audit log {self.path} is closed")
        if self._broken is not None:
            raise AuditError(
                f"audit log {self.path} is unusable after a failed write or fsync ({self._broken}); reopen it"
                " (a torn last line is then set aside and recorded)"
            )

    def _append_locked(self, items: list[tuple[str, dict[str, Any]] | Prepared]) -> list[AuditRecord]:
        """Write records; an item may carry its body's canonical bytes (`Prepared`), then not made again."""
        records, lines = [], []
        seq, head = self._next_seq, self._head
        for item in items:
            kind, body = item[0], item[1]
            fields = {"seq": seq, "time": utc_now(), "type": kind, "body": body, "prev": head}
            if kind == CHECKPOINT:
                body["mac"] = checkpoint_mac(self._key, fields)
            head, line = _seal(fields, item[2] if len(item) > 2 else None)  # type: ignore[misc]
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
            opening.save_key(self.state_dir, self.log_id, self._key_id, self._epoch, self._key)
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


def _seal(fields: dict[str, Any], body_bytes: bytes | None = None) -> tuple[str, bytes]:
    """(hash, line): the canonical record with its hash spliced in. Sorted keys put `hash` right before
    `prev`, and everything from `prev` on is known, so one serialisation serves both. `body_bytes`, the
    body's canonical form when the caller has it, is spliced in too (`body` sorts first)."""
    tail = canonical({k: fields[k] for k in ("prev", "seq", "time", "type")})[1:]
    unsigned = canonical(fields) if body_bytes is None else b'{"body":' + body_bytes + b"," + tail
    digest = hashlib.sha256(unsigned).hexdigest()
    assert unsigned.endswith(b"," + tail)
    cut = len(unsigned) - len(tail)
    return digest, unsigned[:cut] + b'"hash":"' + digest.encode() + b'",' + tail + b"\n"


def _check_type(kind: str) -> str:
    if not isinstance(kind, str) or not kind:
        raise ValueError("an audit record type is a non-empty string")
    if kind in RESERVED_TYPES:
        raise ValueError(f"audit record type {kind!r} is reserved for the log itself")
    return kind


def _normalise(body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The body as it will read back (tuples become lists), and its canonical bytes (which that body
    serialises to again); ValueError/TypeError when it is not JSON."""
    if not isinstance(body, dict):
        raise TypeError("an audit record body is a dict")
    data = canonical(body)
    return json.loads(data), data
