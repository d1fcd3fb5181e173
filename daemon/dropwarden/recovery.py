"""Startup recovery: finish or roll back actions a crash interrupted, as their intents say."""

from __future__ import annotations

import base64
import os

import structlog

from dropwarden.activewatch import ActiveWatch
from dropwarden.audit import AuditLog
from dropwarden.fsops import open_subdir_chain
from dropwarden.state import Intent, State

log = structlog.get_logger("dropwarden.recovery")


def recover(state: State, audit: AuditLog, watches: dict[str, ActiveWatch]) -> int:
    """Resolve every pending intent; returns how many there were."""
    intents = state.pending_intents()
    for intent in intents:
        watch = watches.get(intent.body.get("watch", ""))
        outcome = _resolve(intent, watch) if watch is not None else "orphaned"
        store = watch.store if watch is not None else None
        finished_quarantine = outcome == "completed" and intent.op == "quarantine"
        if finished_quarantine and store and not store.has_sidecar(intent.id):
            store.write_sidecar(intent.id, intent.body["sidecar"])
        audit.append(
            {"completed": "action.done", "rolled_back": "action.rolled_back"}.get(outcome, "action.failed"),
            {
                "op": intent.op,
                "id": intent.id,
                "watch": intent.body.get("watch"),
                "recovered": True,
                "outcome": outcome,
            },
        )
        state.finish_intent(intent.id, {"completed": "done"}.get(outcome, outcome))
        log.info("recovered interrupted action", op=intent.op, id=intent.id, outcome=outcome)
    return len(intents)


def _resolve(intent: Intent, watch: ActiveWatch) -> str:
    """'completed' when the move happened, 'rolled_back' when the file is still where it was."""
    identity = intent.body["identity"]
    relpath = base64.b64decode(intent.body["relpath_b64"])
    parts = relpath.split(b"/")
    if intent.op == "quarantine" and watch.store is not None and watch.store.has_item(intent.body["item_id"]):
        return "completed"
    if (
        intent.op == "release"
        and watch.release_fd is not None
        and _exists_with(watch.release_fd, parts, identity)
    ):
        return "completed"
    if _exists_with(watch.root_fd, parts, identity):
        return "rolled_back"
    return "lost"


def _exists_with(root_fd: int, parts: list[bytes], identity: dict) -> bool:
    try:
        fd = open_subdir_chain(root_fd, [os.fsdecode(p) for p in parts[:-1]])
    except OSError:
        return False
    try:
        st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    except OSError:
        return False
    finally:
        os.close(fd)
    return (st.st_dev, st.st_ino) == (identity["dev"], identity["ino"])
