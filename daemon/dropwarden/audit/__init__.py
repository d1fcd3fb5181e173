"""Tamper-evident audit log: hash-chained canonical JSON lines with forward-secure keyed checkpoints.

Format. One record per line: canonical JSON (sorted keys, no whitespace, UTF-8, no NaN) of
`{seq, time, type, body, prev, hash}`; `seq` counts from 0, `time` is RFC 3339 UTC, `prev` is the
previous record's `hash`, and `hash` is sha256 (hex) over the canonical record without `hash`. Record 0 is
`log.open` (format, random `log_id`, `key_id` naming K_0, and the previous log's anchor if any). The log
adds only these fields and its own bookkeeping records; bodies are the caller's.

Checkpoints. A `checkpoint` record (every `checkpoint_every` records, every `checkpoint_interval` seconds
with new records, at open and at close) carries `epoch` i and an HMAC-SHA256 under K_i over the record
(hence over the chain head). Then K_{i+1} = SHA-256(tag || K_i) replaces K_i on disk
(`<state>/keys/audit-current.json`, atomic replace, old bytes overwritten): someone who steals today's key
can forge only checkpoints after the last one written. A verifier needs K_0 (`<state>/keys/audit-k0.key`,
made with the first log): `dropwarden audit export-key` prints it for offline storage and removes it
from the host. The daemon never needs K_0 again: it resumes from the evolved key, and a new log
(rotation) continues the same key chain (its log.open names `key_epoch`, the epoch of its first
checkpoint). Only when the key state is lost does a new log start a new chain with a new K_0.

The anchor. `<state>/audit-anchor.json` names the durable chain head (log_id, seq, hash) and the last
checkpoint (seq, hash, epoch, byte offset). It is rewritten after each checkpoint and, from the
background thread, whenever newer records are durable, at most every ANCHOR_WINDOW (0.1 s: each
rewrite is a flush beside the log's own); with fsync=never only at checkpoints. A log that does not
reach the anchored head, or differs at it, was cut or rewritten: open and `audit verify` refuse it.
What the anchor cannot see: records not yet durable, and a rewrite of the anchor file itself; the head
also travels with every alert and, every `head_interval`, as an `audit.head` event to the alert sinks,
off the host.

Durability (`audit.fsync`). `always`: an append is durable when it returns (one fdatasync per append or
`append_many`). `batch`: group commit; appends reach the page cache and are fsynced at most every ~20 ms
(by the appender or a background thread), or when `sync()` returns (concurrent callers share one fsync).
`never`: page cache only. Checkpoints are fsynced in every mode, before the anchor and the key move on.

One writer: an exclusive flock on the log; a second writer gets AuditLocked. On open a torn last line
(no newline: crash mid-write) is copied to `<log>.torn-<UTC time>` (nothing is left there when that copy
cannot be written: a full disk), the log is truncated to its last complete line, and an `audit.repair`
record says bytes, sha256 and where they went. Any other damage (lines after the anchored checkpoint, or
all lines when no anchor belongs to the log; a log short of the anchored head, torn there included)
raises AuditError naming the commands that keep the file and begin a new log; nothing else is repaired.
`dropwarden audit verify` checks the whole file.
"""

from dropwarden.audit.chain import AuditError, AuditLocked
from dropwarden.audit.log import AuditLog, AuditRecord
from dropwarden.audit.verify import VerifyResult, log_identity, previous_log, verify

__all__ = [
    "AuditError",
    "AuditLocked",
    "AuditLog",
    "AuditRecord",
    "VerifyResult",
    "log_identity",
    "previous_log",
    "verify",
]
