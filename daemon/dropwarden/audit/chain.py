"""Audit record format: canonical JSON, record hashes, checkpoint MACs, key evolution, the chain checker."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shlex
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

FORMAT = "dropwarden-audit/1"
GENESIS_PREV = "0" * 64
FIELDS = frozenset({"seq", "time", "type", "body", "prev", "hash"})
OPEN = "log.open"
RESUME = "log.resume"
CHECKPOINT = "checkpoint"
REPAIR = "audit.repair"
RESERVED_TYPES = frozenset({OPEN, RESUME, CHECKPOINT, REPAIR})

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_EVOLVE = b"dropwarden-audit-evolve\x00"
_KEY_ID = b"dropwarden-audit-key-id\x00"


class AuditError(Exception):
    """The log cannot be opened or written safely: damage, a lock held by another writer, a missing key."""


class AuditLocked(AuditError):
    """Another writer (normally the running daemon) holds the log's lock; the log itself is fine."""


def new_log_advice(path: str) -> str:
    """The exact commands that keep a damaged log as evidence and let the daemon begin a new one."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = shlex.quote(f"{path}.damaged-{stamp}")
    return (
        f"keep the file as evidence and let the daemon begin a new log: `mv {shlex.quote(path)} {aside}`,"
        " then start dropwarden again (`systemctl restart dropwarden`); the new log's first record names"
        f" the last anchored record of the old one, and `dropwarden audit verify {aside}` shows the damage"
    )


class Damage(Exception):
    """One line that does not belong where it is; `seq` is the record's own seq when it could be read."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.seq = seq


def canonical(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8; NaN/Infinity raise ValueError, non-JSON types TypeError."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_hash(fields: dict[str, Any]) -> str:
    """sha256 over the canonical record without its `hash` field."""
    return hashlib.sha256(canonical({k: v for k, v in fields.items() if k != "hash"})).hexdigest()


def evolve(key: bytes) -> bytes:
    """K_{i+1} = SHA-256("dropwarden-audit-evolve\\0" || K_i): one-way, so K_i does not give K_{i-1}."""
    return hashlib.sha256(_EVOLVE + key).digest()


def evolve_to(key: bytes, steps: int) -> bytes:
    """The key `steps` evolutions after `key` (K_n from K_0 with steps=n)."""
    for _ in range(steps):
        key = evolve(key)
    return key


def key_id(k0: bytes) -> str:
    """A public name for K_0 (domain-separated from `evolve`, so it reveals no key of the chain)."""
    return hashlib.sha256(_KEY_ID + k0).hexdigest()[:16]


def checkpoint_mac(key: bytes, fields: dict[str, Any]) -> str:
    """HMAC-SHA256 under the epoch key over the canonical checkpoint without `hash` and without `body.mac`.

    It covers `prev` (the chain head), `seq`, `time` and the body, hence every record before it."""
    body = {k: v for k, v in fields["body"].items() if k != "mac"}
    message = canonical({**{k: v for k, v in fields.items() if k != "hash"}, "body": body})
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def iter_lines(handle: BinaryIO, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line with its newline; the last one may lack it) from `start` to the end."""
    handle.seek(start)
    offset = start
    for line in handle:
        yield offset, line
        offset += len(line)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def parse_line(raw: bytes) -> dict[str, Any]:
    """The record on one line (without its newline), checked for shape and canonical form; raises Damage."""
    try:
        record = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested beyond json's reach
        raise Damage("not a valid JSON record (bytes changed or garbage)") from None
    if not isinstance(record, dict):
        raise Damage("not a JSON object")
    seq = record.get("seq")
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    if set(record) != FIELDS:
        raise Damage(f"fields are {sorted(record)}, expected {sorted(FIELDS)}", seq)
    if (
        seq is None
        or seq < 0
        or not isinstance(record["time"], str)
        or not _TIME.fullmatch(record["time"])
        or not isinstance(record["type"], str)
        or not record["type"]
        or not isinstance(record["body"], dict)
        or not isinstance(record["prev"], str)
        or not _HEX64.fullmatch(record["prev"])
        or not isinstance(record["hash"], str)
        or not _HEX64.fullmatch(record["hash"])
    ):
        raise Damage("a field has the wrong type or format", seq)
    try:
        canonical_form = canonical(record)
    except ValueError:  # a number past a float's range: json reads 1e400 as infinity, never written
        raise Damage("a number is out of range (bytes were changed)", seq) from None
    if canonical_form != raw:
        raise Damage("the line is not in canonical form (bytes were changed)", seq)
    if record_hash(record) != record["hash"]:
        raise Damage("its hash does not match its content: the record was altered", seq)
    return record


class ChainChecker:
    """Feed complete lines in order; raises Damage at the first one that does not chain.

    With K_0 it also checks each checkpoint's MAC, evolving the key as the writer did. A log continues
    the key chain of the log before it: its log.open names the epoch of its first checkpoint
    (`key_epoch`, absent for 0), and checkpoint epochs count on from there."""

    def __init__(self, k0: bytes | None = None) -> None:
        self.k0 = k0
        self.next_seq = 0
        self.head: str | None = GENESIS_PREV
        self.log_id: str | None = None
        self.key_id: str | None = None
        self.key_epoch = 0  # the epoch of this log's first checkpoint
        self.epoch = 0  # the epoch the next checkpoint must carry
        self.checkpoints = 0  # checkpoints seen
        self.last_checkpoint: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None
        self._key = k0

    def resume(self, log_id: str, key_id: str, next_seq: int, epoch: int) -> None:
        """Continue at a later record without its predecessors (its `prev` is taken on trust; no MACs)."""
        self.log_id, self.key_id = log_id, key_id
        self.next_seq, self.epoch = next_seq, epoch
        self.head = None
        self._key = None

    def feed(self, raw: bytes) -> dict[str, Any]:
        record = parse_line(raw)
        seq = record["seq"]
        if seq != self.next_seq:
            raise Damage(
                f"seq {seq} where {self.next_seq} was expected: records deleted, inserted or reordered", seq
            )
        if self.head is not None and record["prev"] != self.head:
            raise Damage(
                "prev is not the previous record's hash: a record was deleted, inserted or reordered", seq
            )
        kind = record["type"]
        if seq == 0:
            self._check_genesis(record)
        elif kind == OPEN:
            raise Damage("a log.open record after the start of the log", seq)
        elif kind == CHECKPOINT:
            self._check_checkpoint(record)
        self.next_seq = seq + 1
        self.head = record["hash"]
        self.last = record
        return record

    def _check_genesis(self, record: dict[str, Any]) -> None:
        body = record["body"]
        if record["type"] != OPEN or record["prev"] != GENESIS_PREV:
            raise Damage("the first record is not a log.open record", 0)
        if body.get("format") != FORMAT:
            raise Damage(f"unknown log format {body.get('format')!r} (expected {FORMAT})", 0)
        if not isinstance(body.get("log_id"), str) or not isinstance(body.get("key_id"), str):
            raise Damage("the log.open record lacks log_id or key_id", 0)
        self.log_id, self.key_id = body["log_id"], body["key_id"]
        epoch = body.get("key_epoch", 0)
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise Damage(f"the log.open record has an invalid key_epoch {epoch!r}", 0)
        self.key_epoch = self.epoch = epoch
        if self.k0 is not None and key_id(self.k0) != self.key_id:
            raise Damage(
                f"the given K_0 (key id {key_id(self.k0)}) is not this log's key (key id {self.key_id}):"
                " wrong key file, or the log was rewritten",
                0,
            )
        if self._key is not None:
            self._key = evolve_to(self._key, epoch)

    def _check_checkpoint(self, record: dict[str, Any]) -> None:
        body, seq = record["body"], record["seq"]
        epoch = body.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch != self.epoch:
            raise Damage(
                f"checkpoint epoch {epoch!r} where {self.epoch} was expected:"
                " a checkpoint was removed or forged",
                seq,
            )
        if body.get("log_id") != self.log_id:
            raise Damage("the checkpoint names another log", seq)
        if not isinstance(body.get("mac"), str):
            raise Damage("the checkpoint has no MAC", seq)
        if self._key is not None:
            if not hmac.compare_digest(checkpoint_mac(self._key, record), body["mac"]):
                raise Damage(
                    "the checkpoint MAC does not verify:"
                    " records up to here were altered, inserted or rewritten",
                    seq,
                )
            self._key = evolve(self._key)
        self.epoch += 1
        self.checkpoints += 1
        self.last_checkpoint = record
