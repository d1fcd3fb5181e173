"""Reconcile: list each watched tree and enqueue whatever the judged-file index does not know.

inotify loses events when its kernel queue overflows (and watchdog says so only in a log line), and
nothing is watched while the daemon is down. This sweep — at startup, periodically, and whenever
loss is suspected — is what guarantees that every file is judged.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from dropwarden.activewatch import ActiveWatch
from dropwarden.fsops import DIR_FLAGS
from dropwarden.intake import FileIdentity
from dropwarden.settle import Hint, is_ignored
from dropwarden.state import State


def reconcile(
    watch: ActiveWatch,
    state: State,
    ruleset: str,
    enqueue: Callable[[str, str, Hint, str], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Enqueue every unjudged entry under the watch; returns how many were enqueued."""
    return _sweep(watch, os.dup(watch.root_fd), "", state, ruleset, enqueue, should_stop)


def _sweep(
    watch: ActiveWatch,
    fd: int,
    prefix: str,
    state: State,
    ruleset: str,
    enqueue: Callable[[str, str, Hint, str], None],
    should_stop: Callable[[], bool],
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
                try:
                    sub = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                found += _sweep(watch, sub, rel, state, ruleset, enqueue, should_stop)
                continue
            if is_ignored(entry.name, watch.settings.ignore):
                continue
            if state.judged_verdict(FileIdentity.of(st), ruleset) is None:
                enqueue(watch.id, rel, Hint.STAT, "reconcile")
                found += 1
    finally:
        os.close(fd)
    return found
