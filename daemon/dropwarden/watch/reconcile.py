"""Reconcile: list each watched tree and enqueue whatever the judged-file index does not know.

inotify loses events when its kernel queue overflows (and watchdog says so only in a log line), and
nothing is watched while the daemon is down. This sweep — at startup, periodically, and whenever
loss is suspected — is what guarantees that every file is judged.

It never crosses into another file system mounted inside the tree (nothing there can be renamed to the
quarantine or the release folder): those directories are noted on the tree, and the service reports them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from dropwarden.act.fsops import DIR_FLAGS
from dropwarden.judge.intake import FileIdentity
from dropwarden.state import State
from dropwarden.watch.activewatch import ActiveWatch
from dropwarden.watch.settle import Hint, is_ignored


def reconcile(
    watch: ActiveWatch,
    state: State,
    ruleset: str,
    enqueue: Callable[[str, str, Hint, str], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Enqueue every unjudged entry under the watch; returns how many were enqueued."""
    foreign: set[str] = set()
    root_dev = os.fstat(watch.root_fd).st_dev
    found = _sweep(watch, os.dup(watch.root_fd), "", state, ruleset, enqueue, should_stop, root_dev, foreign)
    if not should_stop():
        watch.tree.mounts.from_walk = frozenset(foreign)
    return found


def _sweep(
    watch: ActiveWatch,
    fd: int,
    prefix: str,
    state: State,
    ruleset: str,
    enqueue: Callable[[str, str, Hint, str], None],
    should_stop: Callable[[], bool],
    root_dev: int,
    foreign: set[str],
) -> int:
    found = 0
    try:
        with os.scandir(fd) as listing:
            entries = list(listing)
        for entry in entries:
            if should_stop():
                break
            rel = os.path.join(prefix, entry.name) if prefix else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if not watch.settings.recursive or (st.st_dev, st.st_ino) in watch.excluded_dirs:
                    continue
                path = os.path.join(watch.tree.root, rel)
                if st.st_dev != root_dev:
                    foreign.add(path)  # a mount point (or a btrfs subvolume): not ours to sweep
                    continue
                if watch.tree.mounts.covers(path):
                    continue  # a bind mount of the same file system: renames across it fail too
                try:
                    sub = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                found += _sweep(watch, sub, rel, state, ruleset, enqueue, should_stop, root_dev, foreign)
                continue
            if is_ignored(entry.name, watch.settings.ignore):
                continue
            if state.judged_verdict(FileIdentity.of(st), ruleset) is None:
                enqueue(watch.id, rel, Hint.STAT, "reconcile")
                found += 1
    finally:
        os.close(fd)
    return found
