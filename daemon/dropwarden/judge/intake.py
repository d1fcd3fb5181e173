"""Safe intake: open a file relative to a directory fd without following links, snapshot it once.

Everything downstream judges the `Snapshot`'s immutable bytes; the identity recorded here is what
the daemon re-checks before it acts, so a file swapped after judging is never acted on.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass

from dropwarden.verdict import Reason

_READ_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What "the same file" means: same inode, size, modification and change time.

    ctime is stricter than the design's (dev, ino, size, mtime_ns): a rename or chmod also makes the
    file "another version". That is what we want: a file an operator restores from quarantine comes
    back with its old inode and mtime but a new ctime, and must be judged again; and a file whose
    metadata changed between judging and acting is judged again rather than acted on.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Snapshot:
    """The bytes of one file as read once, with its identity and metadata at that moment."""

    display_path: str
    data: bytes
    sha256: str
    identity: FileIdentity
    mode: int
    uid: int
    gid: int
    nlink: int
    ctime_ns: int


@dataclass(frozen=True)
class Refusal:
    """Why a name was not snapshotted; carries the identity when one could be read."""

    reason: Reason
    detail: str
    identity: FileIdentity | None = None
    sha256: str | None = None


def describe_mode(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "regular file" if stat.S_ISREG(mode) else "unknown type"


def take_snapshot(
    dir_fd: int,
    name: str | bytes,
    *,
    display_path: str,
    max_size: int,
    require_single_link: bool = False,
) -> Snapshot | Refusal:
    """Snapshot `name` inside `dir_fd`, or say why not.

    lstat first so FIFOs and devices are refused without ever being opened; then open with
    O_NOFOLLOW|O_NONBLOCK and fstat the descriptor, which is the authority (the name may have been
    swapped between the two calls).
    """
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return Refusal(Reason.VANISHED, "before it could be read")
    except OSError as exc:
        return Refusal(Reason.UNREADABLE, exc.strerror or str(exc))
    refusal = _refuse_type(before, require_single_link, max_size)
    if refusal is not None:
        return refusal
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Refusal(Reason.SYMLINK, "is a symbolic link (not followed)")
        if exc.errno == errno.ENOENT:
            return Refusal(Reason.VANISHED, "before it could be read")
        return Refusal(Reason.UNREADABLE, exc.strerror or str(exc))
    try:
        st = os.fstat(fd)
        refusal = _refuse_type(st, require_single_link, max_size)
        if refusal is not None:
            return refusal
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            return Refusal(Reason.CHANGED, "name was replaced while opening", FileIdentity.of(st))
        data, digest = _read_all(fd, st.st_size, max_size)
        after = os.fstat(fd)
    except OSError as exc:
        return Refusal(Reason.UNREADABLE, exc.strerror or str(exc))
    finally:
        os.close(fd)
    identity = FileIdentity.of(after)
    if len(data) > max_size:
        return Refusal(Reason.TOO_LARGE, f"grew past the {max_size}-byte limit while reading", identity)
    if len(data) != after.st_size or identity != FileIdentity.of(st):
        return Refusal(Reason.CHANGED, "file changed while it was being read", identity)
    return Snapshot(
        display_path=display_path,
        data=data,
        sha256=digest,
        identity=identity,
        mode=after.st_mode,
        uid=after.st_uid,
        gid=after.st_gid,
        nlink=after.st_nlink,
        ctime_ns=after.st_ctime_ns,
    )


def _refuse_type(st: os.stat_result, require_single_link: bool, max_size: int) -> Refusal | None:
    identity = FileIdentity.of(st)
    if stat.S_ISLNK(st.st_mode):
        return Refusal(Reason.SYMLINK, "is a symbolic link (not followed)", identity)
    if not stat.S_ISREG(st.st_mode):
        return Refusal(Reason.NOT_REGULAR, f"is a {describe_mode(st.st_mode)}", identity)
    if require_single_link and st.st_nlink != 1:
        return Refusal(Reason.HARD_LINKED, f"has {st.st_nlink} hard links", identity)
    if st.st_size > max_size:
        return Refusal(Reason.TOO_LARGE, f"{st.st_size} bytes exceeds the {max_size}-byte limit", identity)
    return None


def _read_all(fd: int, expected: int, max_size: int) -> tuple[bytes, str]:
    """Read up to max_size + 1 bytes (one extra reveals growth) and hash them.

    The first read asks for the size fstat gave plus one, so a file that did not grow arrives in one
    buffer of its own size: joining chunks would hold a 64 MiB file twice for a moment."""
    first = os.read(fd, min(expected, max_size) + 1)
    chunks = [first]
    remaining = max_size + 1 - len(first)
    while remaining > 0 and chunks[-1]:
        chunk = os.read(fd, min(_READ_CHUNK, remaining))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    data = first if len(chunks) == 1 else b"".join(chunks)
    return data, hashlib.sha256(data).hexdigest()
