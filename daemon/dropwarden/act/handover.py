"""Hand a judged file over: a new file holding exactly the judged bytes takes the original's place.

A writer may still hold the original open, so its inode must never reach the release folder or the
quarantine. Instead (all within the watch's private store, on the watch's file system):

1. the judged snapshot is written to `.dw-<op>.copy` (O_EXCL, no link followed, fsynced);
2. the original is renamed out of the folder to `.dw-<op>.hold` and checked to be the file judged
   (else it is put back, never replacing anything, and judged again);
3. the copy is renamed to its destination (the release folder, or the item id in the store);
4. the held original is unlinked: a descriptor still open on it now writes to a file no-one can reach.

Every step is a rename or an unlink recorded by name in the write-ahead intent, so after a crash
between any two, recovery tells from the names alone what to finish or undo (`recovery.py`).
A file that was never read (too large, unreadable) is moved itself: nothing was judged to copy. It
keeps its inode, so it is made 0600 and its identity in the store recorded: restore refuses it changed.
"""

from __future__ import annotations

import os
import stat
from contextlib import suppress
from dataclasses import dataclass

from dropwarden.act.fsops import fsync_dir, place_tagged, rename_noreplace, sync_file_system
from dropwarden.act.quarantine import QuarantineStore
from dropwarden.judge.intake import FileIdentity, Snapshot
from dropwarden.judge.turn import without_turn

WORK_PREFIX = ".dw-"
COPY_SUFFIX = ".copy"
HOLD_SUFFIX = ".hold"


def copy_name(op_id: str) -> str:
    return f"{WORK_PREFIX}{op_id}{COPY_SUFFIX}"


def hold_name(op_id: str) -> str:
    return f"{WORK_PREFIX}{op_id}{HOLD_SUFFIX}"


def tag_of(op_id: str) -> str:
    """What a name clash is resolved with: `a.txt` -> `a.<tag>.txt`."""
    return op_id[:8]


def is_work_name(name: str) -> bool:
    return name.startswith(WORK_PREFIX) and name.endswith((COPY_SUFFIX, HOLD_SUFFIX))


class Vanished(Exception):
    """The file is gone from its name (deleted or moved away by its writer): nothing to hand over."""


class NotTheJudgedFile(Exception):
    """The name held another file, or another version, than the one judged: it was put back."""

    def __init__(self, put_back_as: str) -> None:
        super().__init__(f"not the judged file; put back as {put_back_as!r}")
        self.put_back_as = put_back_as


def same_version(st: os.stat_result, identity: FileIdentity) -> bool:
    """The judged file, unchanged in content (a rename changes ctime, so ctime is not compared)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (
        identity.dev,
        identity.ino,
        identity.size,
        identity.mtime_ns,
    )


def hand_over_copy(
    store: QuarantineStore,
    src_dir_fd: int,
    name: str,
    op_id: str,
    snapshot: Snapshot,
    *,
    dst_dir_fd: int,
    dst_name: str,
    clash_tag: str | None,
    private: bool,
) -> str:
    """Steps 1–4 for a judged snapshot; returns the destination name (tagged on a clash when
    `clash_tag` is given, else FileExistsError). `private`: mode 0600 (a quarantine item); otherwise
    the snapshot's permission bits, owner and mtime (a release).

    On NotTheJudgedFile or any error, the original is back in the folder and the copy is gone."""
    copy, hold = copy_name(op_id), hold_name(op_id)
    if private:
        store.write_copy(copy, snapshot.data, mode=0o600, owner=None, mtime_ns=None)
    else:
        store.write_copy(
            copy,
            snapshot.data,
            mode=stat.S_IMODE(snapshot.mode),
            owner=(snapshot.uid, snapshot.gid),
            mtime_ns=snapshot.identity.mtime_ns,
        )
    try:
        held = _take(store, src_dir_fd, name, hold)
    except BaseException:
        store.discard(copy)
        raise
    try:
        if not same_version(held, snapshot.identity):
            raise NotTheJudgedFile(store.give_back(hold, src_dir_fd, name, tag_of(op_id)))
        if clash_tag is None:
            rename_noreplace(store.fd, copy, dst_dir_fd, dst_name)
            final = dst_name
        else:
            final = place_tagged(store.fd, copy, dst_dir_fd, dst_name, clash_tag)
        fsync_dir(dst_dir_fd)  # the judged bytes are durable at their destination before the original goes
    except NotTheJudgedFile:
        store.discard(copy)
        raise
    except BaseException:
        with suppress(OSError):  # if even this fails, the intent stays pending and recovery puts it back
            store.give_back(hold, src_dir_fd, name, tag_of(op_id))
        store.discard(copy)
        raise
    store.discard(hold)
    fsync_dir(store.fd)
    fsync_dir(src_dir_fd)
    return final


@dataclass(frozen=True)
class CopyMove:
    """One file of a batch handed over by `hand_over_copies` (the arguments of `hand_over_copy`)."""

    src_dir_fd: int
    name: str
    op_id: str
    snapshot: Snapshot
    dst_dir_fd: int
    dst_name: str
    clash_tag: str | None


def hand_over_copies(store: QuarantineStore, moves: list[CopyMove]) -> list[str | BaseException]:
    """Steps 1-4 for a batch of released snapshots (mode, owner and mtime kept), with one syncfs(2) where
    `hand_over_copy` fsyncs each file and directory: the copies are durable before any original is
    taken, every destination name before any held original goes, and the removals before this returns.
    Per move, in order: its destination name, or what `hand_over_copy` would have raised for it
    (NotTheJudgedFile, Vanished, OSError); each one failed has its original back in its folder.
    Where syncfs is missing, each move is `hand_over_copy` in turn."""
    results: list[str | BaseException | None] = [None] * len(moves)
    live: list[int] = []
    for index, move in enumerate(moves):  # 1. every copy written, not yet durable
        snapshot = move.snapshot
        try:
            store.write_copy(
                copy_name(move.op_id),
                snapshot.data,
                mode=stat.S_IMODE(snapshot.mode),
                owner=(snapshot.uid, snapshot.gid),
                mtime_ns=snapshot.identity.mtime_ns,
                durable=False,
            )
        except Exception as exc:
            results[index] = exc
        else:
            live.append(index)
    try:
        synced = sync_file_system(store.fd)  # the copies durable, with one flush
    except OSError as exc:
        synced = exc  # type: ignore[assignment]
    if synced is not True:
        for index in live:
            store.discard(copy_name(moves[index].op_id))
        if synced is False:  # no syncfs: one at a time, fsyncing each
            for index in live:
                with without_turn():
                    results[index] = _one_at_a_time(store, moves[index])
        else:
            for index in live:
                results[index] = synced  # type: ignore[assignment]
        return results  # type: ignore[return-value]
    placed: list[int] = []
    for index in live:  # 2. and 3. each original taken and checked, its copy put in its place
        move = moves[index]
        copy, hold = copy_name(move.op_id), hold_name(move.op_id)
        try:
            held = _take(store, move.src_dir_fd, move.name, hold)
        except Exception as exc:
            store.discard(copy)
            results[index] = exc
            continue
        try:
            if not same_version(held, move.snapshot.identity):
                raise NotTheJudgedFile(store.give_back(hold, move.src_dir_fd, move.name, tag_of(move.op_id)))
            if move.clash_tag is None:
                rename_noreplace(store.fd, copy, move.dst_dir_fd, move.dst_name)
                results[index] = move.dst_name
            else:
                results[index] = place_tagged(store.fd, copy, move.dst_dir_fd, move.dst_name, move.clash_tag)
            placed.append(index)
        except NotTheJudgedFile as exc:
            store.discard(copy)
            results[index] = exc
        except Exception as exc:
            with suppress(OSError):
                store.give_back(hold, move.src_dir_fd, move.name, tag_of(move.op_id))
            store.discard(copy)
            results[index] = exc
    if not placed:
        return results  # type: ignore[return-value]
    try:
        sync_file_system(store.fd)  # every destination durable before any original goes
    except OSError as exc:
        for index in placed:
            move = moves[index]
            with suppress(OSError):  # if even this fails, the intent stays pending; recovery puts it back
                store.give_back(hold_name(move.op_id), move.src_dir_fd, move.name, tag_of(move.op_id))
            results[index] = exc
        return results  # type: ignore[return-value]
    for index in placed:  # 4. the held originals go
        store.discard(hold_name(moves[index].op_id))
    try:
        sync_file_system(store.fd)
    except OSError as exc:
        for index in placed:
            results[index] = exc
    return results  # type: ignore[return-value]


def _one_at_a_time(store: QuarantineStore, move: CopyMove) -> str | BaseException:
    try:
        return hand_over_copy(
            store,
            move.src_dir_fd,
            move.name,
            move.op_id,
            move.snapshot,
            dst_dir_fd=move.dst_dir_fd,
            dst_name=move.dst_name,
            clash_tag=move.clash_tag,
            private=False,
        )
    except Exception as exc:
        return exc


def hand_over_unread(
    store: QuarantineStore, src_dir_fd: int, name: str, item_id: str, dev_ino: tuple[int, int]
) -> dict[str, int]:
    """Move a file that was never read into the store as `item_id` (steps 2 and 3 without a copy: there
    are no judged bytes to copy), then make it 0600; returns its identity there (`seal_unread`), which
    its sidecar records: a writer still holding it open may change it, and then it is not restored.
    NotTheJudgedFile when the name holds another inode."""
    hold = hold_name(item_id)
    held = _take(store, src_dir_fd, name, hold)
    if (held.st_dev, held.st_ino) != dev_ino:
        raise NotTheJudgedFile(store.give_back(hold, src_dir_fd, name, tag_of(item_id)))
    try:
        rename_noreplace(store.fd, hold, store.fd, item_id)
    except BaseException:
        with suppress(OSError):
            store.give_back(hold, src_dir_fd, name, tag_of(item_id))
        raise
    fsync_dir(store.fd)
    fsync_dir(src_dir_fd)
    return store.seal_unread(item_id)


def _take(store: QuarantineStore, src_dir_fd: int, name: str, hold: str) -> os.stat_result:
    """Step 2's rename; Vanished when the name is gone (ENOENT can also mean the store was deleted)."""
    try:
        return store.hold(src_dir_fd, name, hold)
    except FileNotFoundError:
        try:
            os.stat(name, dir_fd=src_dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise Vanished() from None
        raise
