"""Offline check of an audit log: the hash chain, checkpoint MACs under K_0, and the anchor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dropwarden.audit.chain import OPEN, ChainChecker, Damage, iter_lines

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


def verify(path: Path, k0: bytes | None = None, anchor: dict[str, Any] | None = None) -> VerifyResult:
    """Check every line of the log at `path` (OSError when it cannot be read).

    Without `k0` only the chain is checked: a consistent rewrite from any point on goes unnoticed.
    With `anchor` (log_id, seq, hash of the last checkpoint) a tail truncated past that checkpoint,
    or a rewrite before it, is caught. ValueError when `anchor` lacks those fields."""
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
        )

    with open(path, "rb") as handle:
        for _offset, line in iter_lines(handle):
            line_no += 1
            if not line.endswith(b"\n"):
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
                    "this record differs from the checkpoint recorded in the anchor: the log was rewritten"
                    " up to here (records altered, inserted or removed before it)",
                )
    if line_no == 0:
        return result(False, 1, 0, "the log is empty (no log.open record)")
    if anchor is not None and checker.next_seq <= anchor["seq"]:
        return result(
            False,
            line_no + 1,
            checker.next_seq,
            f"the log ends at seq {checker.next_seq - 1} but the anchor records a checkpoint at seq"
            f" {anchor['seq']}: its tail was truncated past a checkpoint",
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
        with open(path, "rb") as handle:
            record = json.loads(handle.readline(1 << 20))
    except (OSError, ValueError):
        return None
    if isinstance(record, dict) and record.get("type") == OPEN and isinstance(record.get("body"), dict):
        return record["body"]
    return None
