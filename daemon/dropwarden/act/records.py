"""A judged file as records show it (path, identity, the smallest decision record), and the checks on
it that the act steps share."""

from __future__ import annotations

import base64
import os
import time
import traceback
from collections import Counter
from typing import Any

from dropwarden.act.handover import copy_name, hold_name
from dropwarden.findings import Finding
from dropwarden.judge.intake import FileIdentity, Snapshot
from dropwarden.judge.judge import Judgement
from dropwarden.judge.names import JudgedName, redact_path
from dropwarden.verdict import Verdict
from dropwarden.watch.activewatch import ActiveWatch
from dropwarden.watch.settle import WorkItem


def path_fields(watch: ActiveWatch, relpath: str, name: JudgedName | None) -> dict[str, Any]:
    """The file's path for records, logs and alerts: readable text, plus its bytes when they are not
    UTF-8. Both show the name (`relpath`, judged as view "name") with each span a rule matched masked;
    without a judged `name` all of `relpath` is masked. Only the quarantine sidecar keeps it exact."""
    shown, shown_bytes = redact_path(watch.tree.root, relpath, name)
    fields: dict[str, Any] = {"path": shown}
    try:
        os.fsencode(os.path.join(watch.tree.root, relpath)).decode("utf-8")
    except UnicodeDecodeError:
        fields["path_b64"] = base64.b64encode(shown_bytes).decode()
    return fields


def identity_fields(identity: FileIdentity | None) -> dict[str, int] | None:
    if identity is None:
        return None
    return {
        "dev": identity.dev,
        "ino": identity.ino,
        "size": identity.size,
        "mtime_ns": identity.mtime_ns,
        "ctime_ns": identity.ctime_ns,
    }


def unrecorded_body(
    watch: ActiveWatch,
    item: WorkItem,
    judgement: Judgement,
    planned: list[dict[str, Any]],
    exc: BaseException,
    started: float,
) -> dict[str, Any]:
    """The smallest decision record: what file, unscanned, and which exception type stopped the
    full one (no findings, no detector runs: those are what could not be recorded)."""
    snapshot, refusal = judgement.snapshot, judgement.refusal
    return {
        "watch": watch.id,
        **path_fields(watch, item.relpath, judgement.name),
        "origin": item.origin,
        "identity": identity_fields(
            snapshot.identity if snapshot else (refusal.identity if refusal else None)
        ),
        "sha256": judgement.sha256,
        "file_type": judgement.file_type.name if judgement.file_type else None,
        "verdict": "unscanned",
        "outcome": "unscanned",
        "reason": record_error(exc),
        "findings": [],
        "detectors": [],
        "actions": planned,
        "ms": round((time.perf_counter() - started) * 1000, 3),
    }


def record_error(exc: BaseException) -> str:
    """The reason a record gives for an exception: its type, never its message (it could hold data)."""
    return f"record_error ({type(exc).__name__})"


def raised_at(exc: BaseException) -> list[str]:
    """The frames an exception passed through, as `module:function:line`: a traceback without the message."""
    return [
        f"{os.path.basename(frame.filename)}:{frame.name}:{frame.lineno}"
        for frame in traceback.extract_tb(exc.__traceback__)
    ][-8:]


def shown_in_clear(name: JudgedName | None, relpath: str) -> bool:
    """The decision record shows the file's whole relative path unmasked: no rule matched in its name."""
    return name is not None and not name.redacted and name.raw == os.fsencode(relpath)


def still_same(dir_fd: int, name: str, snapshot: Snapshot) -> bool:
    """`name` in `dir_fd` is still the file that was judged (same identity, not followed if a link)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return FileIdentity.of(st) == snapshot.identity


def relpath_b64(relpath: str) -> str:
    """A relative path's exact bytes for an intent (any name, valid UTF-8 or not)."""
    return base64.b64encode(os.fsencode(relpath)).decode()


def release_intent(watch_id: str, relpath: str, snapshot: Snapshot, op_id: str) -> dict[str, Any]:
    """The write-ahead intent of releasing a judged file (one release, or one of a batch)."""
    return {
        "op": "release",
        "watch": watch_id,
        "relpath_b64": relpath_b64(relpath),
        "identity": identity_fields(snapshot.identity),
        "sha256": snapshot.sha256,
        "copy": copy_name(op_id),
        "hold": hold_name(op_id),
    }


def true_counts(verdict: Verdict, recorded: tuple[Finding, ...]) -> Counter[str]:
    """Findings per type as made, not only as kept within the caps; none when nothing was recorded."""
    if not recorded:
        return Counter()
    if verdict.counts:
        return Counter({c.type: c.count for c in verdict.counts})
    return Counter(f.type for f in recorded)
