"""Walk files under paths through directory fds, never following symbolic links."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from dropwarden.act.fsops import DIR_FLAGS


@dataclass(frozen=True)
class Entry:
    """A name inside an open directory. `dir_fd` is valid only while the walk is on this entry."""

    dir_fd: int
    name: str
    display_path: str


@dataclass(frozen=True)
class WalkError:
    display_path: str
    detail: str


def display_path(path: str) -> str:
    """Printable form of a path whose bytes may not be valid UTF-8 (undecodable bytes as \\xNN)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def walk(path: str) -> Iterator[Entry | WalkError]:
    """Yield every non-directory under `path` (or `path` itself when it is not a directory).

    Symbolic links are yielded as entries (intake refuses them) and never traversed.
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        yield WalkError(display_path(path), exc.strerror or str(exc))
        return
    if stat.S_ISDIR(st.st_mode):
        try:
            fd = os.open(path, DIR_FLAGS)
        except OSError as exc:
            yield WalkError(display_path(path), exc.strerror or str(exc))
            return
        try:
            yield from _walk_dir(fd, path)
        finally:
            os.close(fd)
        return
    parent, name = os.path.split(os.path.normpath(path))
    try:
        fd = os.open(parent or ".", DIR_FLAGS)
    except OSError as exc:
        yield WalkError(display_path(path), exc.strerror or str(exc))
        return
    try:
        yield Entry(fd, name, display_path(path))
    finally:
        os.close(fd)


def _walk_dir(fd: int, prefix: str) -> Iterator[Entry | WalkError]:
    try:
        with os.scandir(fd) as listing:
            names = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing)
    except OSError as exc:
        yield WalkError(display_path(prefix), exc.strerror or str(exc))
        return
    for name, is_dir in names:
        child = os.path.join(prefix, name)
        if not is_dir:
            yield Entry(fd, name, display_path(child))
            continue
        try:
            sub = os.open(name, DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            yield WalkError(display_path(child), exc.strerror or str(exc))
            continue
        try:
            yield from _walk_dir(sub, child)
        finally:
            os.close(sub)
