"""The built-in move actions: quarantine (into the watch's store) and release (to `release_to`)."""

from __future__ import annotations

import os

from dropwarden.act.fsops import make_subdir_chain
from dropwarden.act.handover import CopyMove, hand_over_copies, hand_over_copy, hand_over_unread, tag_of
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

    def move_many(self, requests: list[MoveRequest]) -> list[str | BaseException | None]:
        """`move` for a batch of files of one watch (one store): one flush for them all
        (`hand_over_copies`). Per request, in order: what `move` returns, or what it would raise."""
        results: list[str | BaseException | None] = [None] * len(requests)
        moves: list[tuple[int, CopyMove]] = []
        opened: dict[tuple[str, ...], int] = {}
        try:
            for index, request in enumerate(requests):
                assert request.snapshot is not None and request.watch.release_fd is not None
                parents = tuple(request.relpath.split(os.sep)[:-1])
                try:
                    if parents not in opened:
                        opened[parents] = make_subdir_chain(request.watch.release_fd, list(parents))
                except OSError as exc:
                    results[index] = exc
                    continue
                move = CopyMove(
                    request.dir_fd,
                    request.name,
                    request.op_id,
                    request.snapshot,
                    opened[parents],
                    request.name,
                    tag_of(request.op_id),
                )
                moves.append((index, move))
            if moves:
                store = requests[moves[0][0]].store
                done = hand_over_copies(store, [move for _, move in moves])
                for (index, _), outcome in zip(moves, done, strict=True):
                    parents = requests[index].relpath.split(os.sep)[:-1]
                    if isinstance(outcome, str) and parents:
                        outcome = os.path.join(*parents, outcome)
                    results[index] = outcome
        finally:
            for fd in opened.values():
                os.close(fd)
        return results
