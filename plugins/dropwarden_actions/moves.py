"""The built-in move actions: quarantine (into the watch's store) and release (to `release_to`)."""

from __future__ import annotations

import os

from dropwarden.act.fsops import make_subdir_chain
from dropwarden.act.handover import hand_over_copy, hand_over_unread, tag_of
from dropwarden.registry import MoveRequest


class QuarantineAction:
    """Moves the judged file into the watch's quarantine directory, with its sidecar."""

    id = "quarantine"
    kind = "move"

    def describe(self) -> str:
        return "move the file into the watch's quarantine directory (private, with a JSON sidecar)"

    def move(self, request: MoveRequest) -> str | None:
        store, sidecar = request.store, request.sidecar or {}
        if request.snapshot is None:  # never read: the file itself goes, if it is still the one seen
            assert request.expected is not None
            stored = hand_over_unread(store, request.dir_fd, request.name, request.op_id, request.expected)
            store.write_sidecar(request.op_id, {**sidecar, "stored_identity": stored})
            return None
        hand_over_copy(
            store,
            request.dir_fd,
            request.name,
            request.op_id,
            request.snapshot,
            dst_dir_fd=store.fd,
            dst_name=request.op_id,
            clash_tag=None,
            private=True,
        )
        store.write_sidecar(request.op_id, sidecar)
        return None


class ReleaseAction:
    """Moves the judged bytes to the watch's `release_to` folder, at the same relative path."""

    id = "release"
    kind = "move"

    def describe(self) -> str:
        return "move the file to the watch's release_to folder (a clash gets a tagged name)"

    def move(self, request: MoveRequest) -> str | None:
        assert request.snapshot is not None and request.watch.release_fd is not None
        parents = request.relpath.split(os.sep)[:-1]
        target_fd = make_subdir_chain(request.watch.release_fd, parents)
        try:
            final = hand_over_copy(
                request.store,
                request.dir_fd,
                request.name,
                request.op_id,
                request.snapshot,
                dst_dir_fd=target_fd,
                dst_name=request.name,
                clash_tag=tag_of(request.op_id),
                private=False,
            )
        finally:
            os.close(target_fd)
        return os.path.join(*parents, final) if parents else final
