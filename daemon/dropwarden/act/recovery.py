"""Startup recovery: finish or roll back actions a crash interrupted, as their intents say; keep the
decisions recorded and not yet acted on (`act.decided`) whose file is still there."""

from __future__ import annotations

import base64
import hashlib
import os
import stat

import structlog

from dropwarden.act.decided import check_at_start, moved_to
from dropwarden.act.fsops import fsync_dir, open_subdir_chain, place_tagged, tagged_name
from dropwarden.act.handover import COPY_SUFFIX, HOLD_SUFFIX, WORK_PREFIX, is_work_name, tag_of
from dropwarden.act.quarantine import QuarantineStore
from dropwarden.audit import AuditLog
from dropwarden.state import Intent, State
from dropwarden.watch.activewatch import ActiveWatch

log = structlog.get_logger("dropwarden.act.recovery")


def recover(state: State, audit: AuditLog, watches: dict[str, ActiveWatch]) -> int:
    """Resolve every pending intent, then clear what no intent accounts for from the stores, then check
    the decisions not acted on against the audit log (`act.decided.check_at_start`); returns how
    many intents there were. An intent that cannot be resolved now (its original could not be put back)
    stays pending for the next start."""
    intents = state.pending_intents()
    for intent in intents:
        watch = watches.get(intent.body.get("watch", ""))
        try:
            outcome = _resolve(intent, watch, state) if watch is not None else "orphaned"
        except OSError as exc:
            log.error(
                "interrupted action not resolved; retried at next start",
                op=intent.op,
                id=intent.id,
                error=exc.strerror or str(exc),
            )
            continue
        store = watch.store if watch is not None else None
        finished_quarantine = outcome == "completed" and intent.op == "quarantine"
        if finished_quarantine and store and not store.has_sidecar(intent.id):
            sidecar = intent.body["sidecar"]
            if "unread" in sidecar:  # moved in unread, not yet made 0600 nor its identity recorded
                sidecar = {**sidecar, "stored_identity": store.seal_unread(intent.id)}
            store.write_sidecar(intent.id, sidecar)
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
    pending = {intent.id for intent in state.pending_intents()}
    for watch in watches.values():
        if watch.store is not None:
            _sweep(watch, watch.store, pending)
    resumable = check_at_start(state, audit, watches)  # after the held originals went back
    if resumable:
        log.info("decisions recorded and not acted on: acted on once their files are taken", count=resumable)
    return len(intents)


def _resolve(intent: Intent, watch: ActiveWatch, state: State) -> str:
    """'completed' when the move happened, 'rolled_back' when the file is (back) where it was."""
    body = intent.body
    identity = body["identity"]
    relpath = base64.b64decode(body["relpath_b64"])
    parts = relpath.split(b"/")
    if "hold" in body and watch.store is not None:
        return _resolve_handover(intent, watch, watch.store, parts, state)
    # Intents written before judged bytes were handed over as copies: the original itself was moved.
    if intent.op == "quarantine" and watch.store is not None and watch.store.has_item(body["item_id"]):
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


def _resolve_handover(
    intent: Intent, watch: ActiveWatch, store: QuarantineStore, parts: list[bytes], state: State
) -> str:
    """The steps of handover.py, read back from the names they leave (copy, hold, destination)."""
    body = intent.body
    identity = body["identity"]
    copy, hold = body.get("copy"), body["hold"]
    held = store.lstat(hold)
    copy_there = copy is not None and store.lstat(copy) is not None
    if held is not None:
        placed = copy is not None and not copy_there
        if placed and (held.st_dev, held.st_ino) == (identity["dev"], identity["ino"]):
            store.discard(hold)  # the copy is at its destination: only the original's unlink was left
            fsync_dir(store.fd)
            return "completed"
        _put_back(store, hold, watch, parts, intent.id, state)
        if copy_there:
            store.discard(copy)
        fsync_dir(store.fd)
        return "rolled_back"
    if copy_there:
        store.discard(copy)  # the original was never taken: the copy goes, the original is judged again
        fsync_dir(store.fd)
    if _exists_with(watch.root_fd, parts, identity):
        return "rolled_back"
    if intent.op == "quarantine" and store.has_item(body["item_id"]):
        return "completed"
    if intent.op == "release" and watch.release_fd is not None and _released(watch.release_fd, parts, intent):
        return "completed"
    return "lost"


def _put_back(
    store: QuarantineStore, hold: str, watch: ActiveWatch, parts: list[bytes], op_id: str, state: State
) -> None:
    """The held original goes back to its folder (tagged if its name was taken meanwhile); to the watch
    root when that folder is gone. Nothing is replaced."""
    name, folder = os.fsdecode(parts[-1]), parts[:-1]
    try:
        dir_fd = open_subdir_chain(watch.root_fd, [os.fsdecode(p) for p in folder])
    except OSError:
        dir_fd, folder = os.dup(watch.root_fd), []
    try:
        placed = place_tagged(store.fd, hold, dir_fd, name, tag_of(op_id))
        fsync_dir(dir_fd)
    finally:
        os.close(dir_fd)
    there = b"/".join([*folder, os.fsencode(placed)])
    if there != b"/".join(parts):  # not where it was: its recorded decision follows it
        moved_to(state, watch.id, b"/".join(parts), there)


def _released(release_fd: int, parts: list[bytes], intent: Intent) -> bool:
    """The copy is in the release folder: under its name or its tagged name, with the judged bytes."""
    name = os.fsdecode(parts[-1])
    try:
        dir_fd = open_subdir_chain(release_fd, [os.fsdecode(p) for p in parts[:-1]])
    except OSError:
        return False
    try:
        for candidate in (name, tagged_name(name, tag_of(intent.id))):
            if _sha256_at(dir_fd, candidate) == intent.body.get("sha256"):
                return True
        return False
    finally:
        os.close(dir_fd)


def _sha256_at(dir_fd: int, name: str) -> str | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def _sweep(watch: ActiveWatch, store: QuarantineStore, pending: set[str]) -> None:
    """Work files no pending intent accounts for: a copy is dropped (its original is elsewhere); a held
    original goes back to the watch root, to be judged. Never expected; logged when found."""
    for name in store.names():
        if not is_work_name(name):
            continue
        op_id = name[len(WORK_PREFIX) :].rsplit(".", 1)[0]
        if op_id in pending:
            continue
        if name.endswith(COPY_SUFFIX):
            store.discard(name)
            log.warning("orphan copy removed from the quarantine directory", watch=watch.id, id=op_id)
        elif name.endswith(HOLD_SUFFIX):
            put = place_tagged(
                store.fd, name, watch.root_fd, f"dropwarden-recovered-{op_id[:8]}", tag_of(op_id)
            )
            log.warning("orphan original returned to the watch root", watch=watch.id, id=op_id, name=put)
    fsync_dir(store.fd)


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
