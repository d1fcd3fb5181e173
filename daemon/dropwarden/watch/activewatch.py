"""A configured watch made ready to act on: root fd, quarantine store, release directory, exclusions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dropwarden.act.fsops import make_subdir_chain, open_dir
from dropwarden.act.quarantine import QuarantineStore, default_quarantine_dir
from dropwarden.config import WatchSettings
from dropwarden.watch.walk import display_path
from dropwarden.watch.watch import NETWORK_FILE_SYSTEMS, WatchedTree, file_system_type


class WatchSetupError(Exception):
    """A watch cannot be armed safely; the daemon refuses to start (or to reload) with it."""


@dataclass
class ActiveWatch:
    settings: WatchSettings
    root_fd: int
    tree: WatchedTree
    store: QuarantineStore | None
    release_fd: int | None
    excluded_dirs: frozenset[tuple[int, int]]  # (dev, ino) of our own directories inside the tree
    retired: list[QuarantineStore] = field(default_factory=list)  # replaced stores, closed with the watch
    file_system: str = ""  # the root's file system type ("" when unknown)

    @property
    def id(self) -> str:
        return self.settings.id

    @property
    def may_stall(self) -> bool:
        """On a network file system, where a read or a rename can stall: the root's file system is one,
        or the watch is polled (which is what such a file system is watched with)."""
        return self.settings.observer == "polling" or self.file_system in NETWORK_FILE_SYSTEMS

    def display(self, relpath: str) -> str:
        return display_path(os.path.join(self.tree.root, relpath))

    def close(self) -> None:
        os.close(self.root_fd)
        if self.release_fd is not None:
            os.close(self.release_fd)
        if self.store is not None:
            self.store.close()
        for store in self.retired:
            store.close()


def arm(settings: WatchSettings) -> ActiveWatch:
    """Open everything a watch needs, refusing unsafe set-ups with an operator-facing message."""
    root = os.path.abspath(settings.path)
    try:
        os.makedirs(root, mode=0o755, exist_ok=True)
        root_fd = open_dir(root)
    except OSError as exc:
        raise WatchSetupError(
            f"watch {settings.id}: cannot open {root}: {exc.strerror} (a symlink?)"
        ) from None
    store = release_fd = None
    try:
        acts = bool(settings.on_finding or settings.on_unscanned or settings.release_to)
        if acts and not os.access(root, os.W_OK | os.X_OK):
            # Catch a read-only mount (ProtectSystem=strict without ReadWritePaths) at start,
            # not at the first file that needs moving.
            raise WatchSetupError(
                f"watch {settings.id}: {root} is not writable by this process, so no file could be moved"
                " (with systemd: add it to ReadWritePaths=)"
            )
        # The store is also where a release stages its copy of the judged bytes (handover.py).
        needs_store = (
            "quarantine" in settings.on_finding
            or "quarantine" in settings.on_unscanned
            or settings.release_to is not None
        )
        qdir = default_quarantine_dir(settings)
        if needs_store:
            try:
                store = QuarantineStore.open(qdir, same_fs_as_fd=root_fd, create=True)
            except Exception as exc:
                raise WatchSetupError(f"watch {settings.id}: quarantine {qdir}: {exc}") from None
        if settings.release_to is not None:
            release_fd = _open_release(settings, root_fd)
        excluded_paths = tuple(str(p) for p in (qdir, settings.release_to) if p is not None)
        excluded = set()
        for fd in (store.fd if store else None, release_fd):
            if fd is not None:
                st = os.fstat(fd)
                excluded.add((st.st_dev, st.st_ino))
        tree = WatchedTree(settings, root, tuple(os.path.abspath(p) for p in excluded_paths))
        armed = ActiveWatch(settings, root_fd, tree, store, release_fd, frozenset(excluded))
        armed.file_system = file_system_type(root)
        return armed
    except BaseException:
        os.close(root_fd)
        if store is not None:
            store.close()
        if release_fd is not None:
            os.close(release_fd)
        raise


def _open_release(settings: WatchSettings, root_fd: int) -> int:
    target = os.path.abspath(settings.release_to)  # type: ignore[arg-type]
    try:
        os.makedirs(target, mode=0o755, exist_ok=True)
        fd = open_dir(target)
    except OSError as exc:
        raise WatchSetupError(f"watch {settings.id}: release_to {target}: {exc.strerror}") from None
    if os.fstat(fd).st_dev != os.fstat(root_fd).st_dev:
        os.close(fd)
        raise WatchSetupError(
            f"watch {settings.id}: release_to {target} is on another file system than {settings.path};"
            " a release must be an atomic rename"
        )
    return fd


__all__ = ["ActiveWatch", "WatchSetupError", "arm", "make_subdir_chain"]
