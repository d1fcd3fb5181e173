"""Opening a quarantine directory safely: private, no link followed, out of reach of others, same FS."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from dropwarden.act.fsops import DIR_FLAGS, fsync_dir


class QuarantineError(Exception):
    """An operation on the quarantine store was refused; the message is meant for the operator."""


def open_parent(path: Path, create: bool) -> int:
    """An fd on the store's parent, creating missing ancestors (0700, no links followed) when `create`.

    The deepest existing ancestor is opened as configured (links in the operator's path are theirs);
    every directory this creates is opened without following links.
    """
    missing: list[str] = []
    base = path.parent
    while not os.path.lexists(base) and base != base.parent:
        missing.append(base.name)
        base = base.parent
    if missing and not create:
        raise QuarantineError(f"quarantine directory {path} does not exist")
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise QuarantineError(f"cannot open {base} (parent of quarantine {path}): {exc.strerror}") from None
    try:
        for part in reversed(missing):
            base = base / part
            nxt = _mkdir_open(fd, base)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _mkdir_open(parent_fd: int, path: Path) -> int:
    """mkdir `path.name` 0700 in parent_fd (if missing) and open it without following links."""
    name = path.name
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            created = True
        except FileExistsError:
            created = False
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        raise QuarantineError(_open_problem(path, exc, parent_fd)) from None
    if created:
        os.fchmod(fd, 0o700)  # whatever the umask
        fsync_dir(parent_fd)
    return fd


def open_store_dir(path: Path, parent_fd: int, create: bool) -> int:
    try:
        if create:
            try:
                os.mkdir(path.name, 0o700, dir_fd=parent_fd)
            except FileExistsError:
                pass
            else:
                fd = os.open(path.name, DIR_FLAGS, dir_fd=parent_fd)
                os.fchmod(fd, 0o700)
                fsync_dir(parent_fd)
                return fd
        return os.open(path.name, DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        raise QuarantineError(f"quarantine directory {path} does not exist") from None
    except OSError as exc:
        raise QuarantineError(_open_problem(path, exc, parent_fd)) from None


def _open_problem(path: Path, exc: OSError, parent_fd: int) -> str:
    """O_NOFOLLOW|O_DIRECTORY on a symlink fails with ENOTDIR (or ELOOP): lstat says which it was."""
    try:
        is_link = stat.S_ISLNK(os.stat(path.name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    if exc.errno == errno.ELOOP or is_link:
        return f"refusing quarantine directory {path}: it is a symbolic link"
    if exc.errno == errno.ENOTDIR:
        return f"refusing quarantine directory {path}: it (or a component) is not a directory"
    return f"cannot open quarantine directory {path}: {exc.strerror}"


def check_private(path: Path, fd: int, parent_fd: int, same_fs_as_fd: int | None) -> None:
    st = os.fstat(fd)
    euid = os.geteuid()
    if st.st_uid != euid:
        raise QuarantineError(
            f"refusing quarantine directory {path}: owned by uid {st.st_uid},"
            f" not by this process's effective uid {euid}"
        )
    if st.st_mode & 0o077:
        raise QuarantineError(
            f"refusing quarantine directory {path}: mode {stat.S_IMODE(st.st_mode):04o} gives group/other"
            f" access; it must be private (chmod 700 {path})"
        )
    parent = os.fstat(parent_fd)
    if parent.st_uid not in (0, euid) or (parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX):
        raise QuarantineError(
            f"refusing quarantine directory {path}: its parent {path.parent} (uid {parent.st_uid}, mode"
            f" {stat.S_IMODE(parent.st_mode):04o}) lets another user rename or replace it"
        )
    if same_fs_as_fd is not None:
        other = os.fstat(same_fs_as_fd)
        if other.st_dev != st.st_dev:
            raise QuarantineError(
                f"refusing quarantine directory {path}: it is on another file system than the watched"
                " directory (a quarantine must be a rename); set quarantine_dir on the same file system"
            )
