"""Offline check of an audit log: the hash chain, checkpoint MACs under K_0, and the anchor (the durable
chain head the daemon last named, or a copy of it kept elsewhere). Rotated files compressed by logrotate
(gzip, whatever their name) are read as they are."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dropwarden.audit.chain import OPEN, ChainChecker, Damage, iter_lines, new_log_advice

_ANCHOR_FIELDS = {"log_id": str, "seq": int, "hash": str}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int  # lines that checked out
    checkpoints: int  # checkpoints seen (MAC-checked when macs_verified)
    macs_verified: bool
    anchor_checked: bool
    log_id: str | None
    last_seq: int | None
    first_bad_line: int | None = None
    first_bad_seq: int | None = None
    message: str = ""
    last_checkpoint_seq: int | None = None
    anchor_seq: int | None = None  # the head the anchor names (checked when anchor_checked)
    key_id: str | None = None
    key_epoch: int = 0  # the epoch of the log's first checkpoint
    next_epoch: int = 0  # the epoch a checkpoint after the last one would carry

    @property
    def after_checkpoint(self) -> int:
        """Records after the last checkpoint: no MAC covers them."""
        if self.last_seq is None:
            return 0
        return self.last_seq - (self.last_checkpoint_seq if self.last_checkpoint_seq is not None else -1)

    @property
    def anchored_only(self) -> int:
        """Of those, how many the anchor covers (a cut or a rewrite of them shows): anchor only, no MAC."""
        if self.anchor_seq is None or self.last_seq is None:
            return 0
        since = self.last_checkpoint_seq if self.last_checkpoint_seq is not None else -1
        return max(0, min(self.anchor_seq, self.last_seq) - since)

    @property
    def unanchored(self) -> int:
        """Records after both the last checkpoint and the anchored head: only the chain covers them, which
        cannot see them cut from the end or rewritten from any point on."""
        return self.after_checkpoint - self.anchored_only


def open_log(path: Path) -> IO[bytes]:
    """The log's bytes: decompressed when the file is gzip (logrotate's `compress`), else as they are."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _readable_lines(handle: IO[bytes], cut: list[str]) -> Iterator[tuple[int, bytes]]:
    """`iter_lines`, ending (the exception's type in `cut`) where a compressed file stops making sense."""
    try:
        yield from iter_lines(handle)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        cut.append(type(exc).__name__)


def verify(path: Path, k0: bytes | None = None, anchor: dict[str, Any] | None = None) -> VerifyResult:
    """Check every line of the log at `path` (OSError when it cannot be read).

    Without `k0` only the chain is checked: a consistent rewrite from any point on goes unnoticed.
    With `anchor` (log_id, seq, hash of a record the log must hold: the durable head the daemon
    anchored, a checkpoint the next rotated file names, or a head copied off the host) a tail cut
    before that record, or a rewrite up to it, is caught. ValueError when `anchor` lacks those fields."""
    if anchor is not None and not all(isinstance(anchor.get(k), t) for k, t in _ANCHOR_FIELDS.items()):
        raise ValueError("an anchor needs log_id, seq and hash")
    checker = ChainChecker(k0)
    line_no = 0

    def result(ok: bool, line: int | None = None, seq: int | None = None, message: str = "") -> VerifyResult:
        return VerifyResult(
            ok=ok,
            records=checker.next_seq if ok else max(0, (line or 1) - 1),
            checkpoints=checker.checkpoints,
            macs_verified=k0 is not None,
            anchor_checked=anchor is not None,
            log_id=checker.log_id,
            last_seq=checker.next_seq - 1 if checker.next_seq else None,
            first_bad_line=line,
            first_bad_seq=seq,
            message=message,
            last_checkpoint_seq=checker.last_checkpoint["seq"] if checker.last_checkpoint else None,
            anchor_seq=anchor["seq"] if anchor is not None else None,
            key_id=checker.key_id,
            key_epoch=checker.key_epoch,
            next_epoch=checker.epoch,
        )

    cut: list[str] = []
    with open_log(path) as handle:
        for _offset, line in _readable_lines(handle, cut):
            line_no += 1
            if not line.endswith(b"\n"):
                if anchor is not None and anchor["seq"] >= checker.next_seq:
                    return result(
                        False,
                        line_no,
                        checker.next_seq,
                        f"torn last line ({len(line)} bytes without a newline) where the anchor names seq"
                        f" {anchor['seq']}, which was durable when it was anchored: the anchored record is"
                        " torn (the storage lost written data, or the file was cut), and the daemon will"
                        f" not start on this file. Next: {new_log_advice(str(Path(path).absolute()))}",
                    )
                return result(
                    False,
                    line_no,
                    checker.next_seq,
                    f"torn last line ({len(line)} bytes without a newline): a crash mid-write or a"
                    " truncation; the daemon sets it aside and records that when it next opens the log",
                )
            try:
                record = checker.feed(line[:-1])
            except Damage as exc:
                seq = exc.seq if exc.seq is not None else checker.next_seq
                return result(False, line_no, seq, exc.message)
            if anchor is not None and line_no == 1 and anchor["log_id"] != checker.log_id:
                return result(
                    False,
                    1,
                    0,
                    f"the anchor belongs to log {anchor['log_id']}, not this one ({checker.log_id})",
                )
            if anchor is not None and record["seq"] == anchor["seq"] and record["hash"] != anchor["hash"]:
                return result(
                    False,
                    line_no,
                    record["seq"],
                    "this record differs from the one the anchor names: the log was rewritten up to here"
                    " (records altered, inserted or removed at or before it)",
                )
    if cut:
        return result(
            False,
            line_no + 1,
            checker.next_seq,
            f"the compressed file is cut short or corrupt after line {line_no} ({cut[0]}): what followed"
            " is lost",
        )
    if line_no == 0:
        return result(False, 1, 0, "the log is empty (no log.open record)")
    if anchor is not None and checker.next_seq <= anchor["seq"]:
        missing = anchor["seq"] - checker.next_seq + 1
        return result(
            False,
            line_no + 1,
            checker.next_seq,
            f"the log ends at seq {checker.next_seq - 1} but the anchor names seq {anchor['seq']}:"
            f" its tail was truncated ({missing} record{'s' if missing > 1 else ''} cut off)",
        )
    return result(True)


def log_identity(path: Path) -> tuple[str, str] | None:
    """(log_id, key_id) from the log.open record on the first line, None when unreadable."""
    body = _open_body(path)
    if body is not None and isinstance(body.get("log_id"), str) and isinstance(body.get("key_id"), str):
        return body["log_id"], body["key_id"]
    return None


def previous_log(path: Path) -> dict[str, Any] | None:
    """The log before this one, as its log.open record names it: the log_id, seq and hash of that
    log's last checkpoint when this one was started (rotation, or a new file at restart); None when
    the first line names none or is unreadable. It anchors that older file (`verify`'s `anchor`)."""
    body = _open_body(path)
    previous = body.get("previous") if body is not None else None
    if isinstance(previous, dict) and all(isinstance(previous.get(k), t) for k, t in _ANCHOR_FIELDS.items()):
        return {k: previous[k] for k in _ANCHOR_FIELDS}
    return None


def _open_body(path: Path) -> dict[str, Any] | None:
    try:
        with open_log(path) as handle:
            record = json.loads(handle.readline(1 << 20))
    except (OSError, EOFError, zlib.error, ValueError, RecursionError):
        return None
    if isinstance(record, dict) and record.get("type") == OPEN and isinstance(record.get("body"), dict):
        return record["body"]
    return None
