"""Checks that `dropwarden doctor` and plugins' `dropwarden_doctor_checks` share: a path the daemon writes."""

from __future__ import annotations

import os
from pathlib import Path

from dropwarden.hookspecs import Check


def path_check(name: str, path: Path, *, directory: bool) -> Check:
    """`path` (a directory, or a file the daemon appends to) is writable by this process, or could be
    created: its nearest existing parent is a directory this process may write."""
    if path.exists():
        if directory != path.is_dir():
            return Check(name, "fail", f"{path} is {'not ' if directory else ''}a directory")
        mode = os.W_OK | os.X_OK if directory else os.W_OK
        if not os.access(path, mode):
            return Check(name, "fail", f"{path} is not writable by this process (uid {os.geteuid()})")
        return Check(name, "ok", f"{path} is writable")
    parent = nearest_existing(path)
    if not parent.is_dir():
        return Check(name, "fail", f"{path} cannot be created: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        why = f"{parent} is not writable by this process"
        return Check(name, "fail", f"{path} does not exist and cannot be created: {why}")
    return Check(name, "ok", f"{path} does not exist yet; it can be created in {parent}")


def nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")
