"""The quarantine store: a private same-filesystem directory of UUID-named files with JSON sidecars."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import stat
import uuid
from pathlib import Path
from typing import Any

from dropwarden.act.fsops import fsync_dir, open_dir, open_subdir_chain, place_tagged, rename_noreplace
from dropwarden.act.quarantine_dir import QuarantineError, check_private, open_parent, open_store_dir
from dropwarden.act.sidecar import check_id, display_bytes, is_item_id, unb64
from dropwarden.act.sidecar import destination_of as destination_of  # importable from here, as before
from dropwarden.act.sidecar import sidecar_for as sidecar_for
from dropwarden.act.sidecar import sidecar_for_unread as sidecar_for_unread
from dropwarden.config import WatchSettings

SIDECAR_SUFFIX = ".json"
STORE_DIR_NAME = ".dropwarden-quarantine"
MAX_SIDECAR_BYTES = 16 * 1024 * 1024
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def default_quarantine_dir(watch: WatchSettings) -> Path:
    """`watch.quarantine_dir`, else `<parent of the watch>/.dropwarden-quarantine/<safe watch name>`.

    The default sits next to the watched folder (not inside it), so it is normally on the same file
    system and out of reach of the folder's writers. A watch id that is not already a safe file name
    (an unnamed watch's id is its path) is sanitised and suffixed with a short hash of the id, so two
    watches never share a store.
    """
    if watch.quarantine_dir is not None:
        return watch.quarantine_dir
    name = _SAFE_NAME.sub("_", watch.id).lstrip(".")
    if name != watch.id or not name:
        digest = hashlib.sha256(watch.id.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        name = f"{name.strip('_') or 'watch'}-{digest}"
    return watch.path.parent / STORE_DIR_NAME / name


class QuarantineStore:
    """One open quarantine directory. Every operation is relative to the directory fd kept here."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: Path, *, same_fs_as_fd: int | None, create: bool) -> QuarantineStore:
        """Open (creating with mode 0700 when `create`) the store at `path` and check that it is private.

        Refused with QuarantineError: a symlink or non-directory, not owned by the effective uid, any
        group/other permission bit, a parent directory that someone else could rename it out of, or a
        different file system from `same_fs_as_fd` (the watch directory: the move in must be a rename).
        """
        path = Path(os.path.abspath(path))
        if path == path.parent:
            raise QuarantineError(f"quarantine directory {path} is not usable (file system root)")
        parent_fd = open_parent(path, create)
        try:
            fd = open_store_dir(path, parent_fd, create)
            try:
                check_private(path, fd, parent_fd, same_fs_as_fd)
            except BaseException:
                os.close(fd)
                raise
        finally:
            os.close(parent_fd)
        return cls(path, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> QuarantineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ items

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def move_in(self, src_dir_fd: int, name: str | bytes, item_id: str) -> os.stat_result:
        """Rename `name` (relative to `src_dir_fd`) into the store as `item_id`, never replacing anything,
        and return the lstat of what arrived: the caller compares it with the judged identity.

        OSError from the rename passes through unchanged (FileExistsError: the id is taken; EXDEV: the
        store is on another file system, which `open(same_fs_as_fd=…)` refuses up front)."""
        check_id(item_id)
        rename_noreplace(src_dir_fd, name, self.fd, item_id)
        fsync_dir(self.fd)
        fsync_dir(src_dir_fd)
        return os.stat(item_id, dir_fd=self.fd, follow_symlinks=False)

    def problem(self) -> str | None:
        """Why the store is no longer safe to move files into, checked through the pinned fd; None when it
        still is: a directory of ours, private (0700), still linked, and still what its path names."""
        try:
            st = os.fstat(self.fd)
        except OSError as exc:
            return f"cannot be checked: {exc.strerror}"
        if st.st_nlink == 0:
            return "was deleted"
        if st.st_uid != os.geteuid():
            return f"is owned by uid {st.st_uid}, not by this process ({os.geteuid()})"
        if st.st_mode & 0o077:
            return f"has mode {stat.S_IMODE(st.st_mode):04o}: group/other access (chmod 700 it)"
        try:
            here = os.stat(self.path, follow_symlinks=False)
        except OSError as exc:
            return f"is no longer at its path ({exc.strerror})"
        if (here.st_dev, here.st_ino) != (st.st_dev, st.st_ino):
            return "was moved or replaced: its path names another file"
        return None

    # ----------------------------------------------------------------------------- handing files over

    def write_copy(
        self,
        name: str,
        data: bytes,
        *,
        mode: int,
        owner: tuple[int, int] | None,
        mtime_ns: int | None,
        durable: bool = True,
    ) -> None:
        """Create `name` in the store (never replacing, no link followed) holding exactly `data`, durable
        when this returns (unless not `durable`: a batch makes its copies durable together):
        permission bits `mode`, and `owner` (uid, gid) where allowed (only root may give a file away;
        the group is tried anyway)."""
        fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=self.fd)
        try:
            try:
                _write_all(fd, data)
                if owner is not None:
                    _give(fd, *owner)
                os.fchmod(fd, mode & 0o777)
                if mtime_ns is not None:
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.fd)
            raise

    def hold(self, src_dir_fd: int, name: str | bytes, hold_name: str) -> os.stat_result:
        """Take `name` out of `src_dir_fd` into the store as `hold_name` (never replacing) and return the
        lstat of what arrived: whoever still holds it open now writes to a file nobody can reach."""
        rename_noreplace(src_dir_fd, name, self.fd, hold_name)
        return os.stat(hold_name, dir_fd=self.fd, follow_symlinks=False)

    def seal_unread(self, item_id: str) -> dict[str, int]:
        """An item moved in unread keeps its inode, which a writer may still hold open: make it 0600 and
        return its identity as it lies in the store (`stored_identity` in its sidecar), which `restore`
        requires unchanged. The store is ours and private (0700), so its names are not links."""
        check_id(item_id)
        with contextlib.suppress(PermissionError):  # not our file and not root: the identity still guards it
            os.chmod(item_id, 0o600, dir_fd=self.fd)
        return stored_identity(os.stat(item_id, dir_fd=self.fd, follow_symlinks=False))

    def give_back(self, hold_name: str, dst_dir_fd: int, name: str, tag: str) -> str:
        """Put a held file back under `name` in `dst_dir_fd`, or, when that name was taken meanwhile,
        under `name` tagged with `tag` (nothing is ever replaced). Returns the name used."""
        return place_tagged(self.fd, hold_name, dst_dir_fd, name, tag)

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def discard(self, name: str) -> bool:
        """Unlink `name` from the store if it is there; True when something was removed."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def names(self) -> list[str]:
        return os.listdir(self.fd)

    def write_sidecar(self, item_id: str, meta: dict[str, Any]) -> None:
        """Write (or atomically replace) `<item_id>.json`, mode 0600, durable when this returns."""
        check_id(item_id)
        data = json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
        tmp = f".{item_id}{SIDECAR_SUFFIX}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, _CREATE_FLAGS, 0o600, dir_fd=self.fd)
        try:
            try:
                os.fchmod(fd, 0o600)
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, item_id + SIDECAR_SUFFIX, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self.fd)
            raise
        fsync_dir(self.fd)

    def has_item(self, item_id: str) -> bool:
        return is_item_id(item_id) and self._is_regular(item_id)

    def has_sidecar(self, item_id: str) -> bool:
        return is_item_id(item_id) and self._is_regular(item_id + SIDECAR_SUFFIX)

    def hash_item(self, item_id: str) -> str:
        """sha256 (hex) of the quarantined file as it is now."""
        check_id(item_id)
        try:
            fd = os.open(item_id, _FILE_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            raise QuarantineError(f"cannot read quarantine item {item_id}: {exc.strerror}") from None
        try:
            return _hash_fd(fd)
        finally:
            os.close(fd)

    def read_sidecar(self, item_id: str) -> dict[str, Any]:
        """The sidecar of `item_id`. QuarantineError when it is missing or not a sidecar of this id."""
        check_id(item_id)
        name = item_id + SIDECAR_SUFFIX
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            raise QuarantineError(f"quarantine item {item_id} has no sidecar in {self.path}") from None
        except OSError as exc:
            raise QuarantineError(f"cannot read sidecar {self.path / name}: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise QuarantineError(f"sidecar {self.path / name} is not a regular file")
            raw = _read_limited(fd, MAX_SIDECAR_BYTES)
        finally:
            os.close(fd)
        try:
            meta = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than json can read
            raise QuarantineError(f"sidecar {self.path / name} is not valid JSON: {exc}") from None
        if not isinstance(meta, dict) or meta.get("id") != item_id:
            raise QuarantineError(f"sidecar {self.path / name} does not describe item {item_id}")
        return meta

    def list_items(self) -> list[dict[str, Any]]:
        """Every item, from its sidecar (plus `"sidecar": true`, `"file": <present>`); a file without a
        sidecar (a crash between move and sidecar) as `{"id", "sidecar": false, "file": true, size…}`;
        an unreadable sidecar as `{"id", "sidecar": false, "error": …}`. Sorted by quarantine time."""
        files, sidecars = set(), set()
        for name in os.listdir(self.fd):
            if is_item_id(name):
                files.add(name)
            elif name.endswith(SIDECAR_SUFFIX) and is_item_id(name[: -len(SIDECAR_SUFFIX)]):
                sidecars.add(name[: -len(SIDECAR_SUFFIX)])
        items: list[dict[str, Any]] = []
        for item_id in sorted(files | sidecars):
            present = item_id in files and self._is_regular(item_id)
            if item_id in sidecars:
                try:
                    meta = self.read_sidecar(item_id)
                except QuarantineError as exc:
                    items.append({"id": item_id, "sidecar": False, "file": present, "error": str(exc)})
                    continue
                items.append({**meta, "sidecar": True, "file": present})
            elif present:
                st = os.stat(item_id, dir_fd=self.fd, follow_symlinks=False)
                items.append(
                    {
                        "id": item_id,
                        "sidecar": False,
                        "file": True,
                        "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns,
                    }
                )
        items.sort(key=lambda item: (str(item.get("quarantined_at", "")), item["id"]))
        return items

    def restore(self, item_id: str, to_dir: Path | None) -> Path:
        """Move an item back, to `to_dir/<original name>` or to its original path, and return where.

        Refused (QuarantineError, nothing changed) when the sidecar is missing, the quarantined bytes no
        longer match its sha256 (an item quarantined unread: its `stored_identity` changed), the
        destination directory cannot be opened without following a link, or the destination name exists
        (never overwritten). The mode's permission bits (not set-id bits)
        are restored and, when running as root, the owner; the sidecar is removed afterwards.
        """
        meta = self.read_sidecar(item_id)
        destination = destination_of(meta, to_dir)
        dest_dir, _, basename = destination.rpartition(b"/")
        dest_display = display_bytes(destination)
        if to_dir is not None:
            dir_fd = self._open_dest(lambda: open_dir(to_dir), display_bytes(os.fsencode(to_dir)))
        else:
            relative = unb64(meta, "relative_path_b64")
            root = destination[: -len(relative) - 1] or b"/"
            subdirs = [os.fsdecode(part) for part in relative.split(b"/")[:-1]]

            def opener() -> int:
                root_fd = open_dir(root)
                try:
                    return open_subdir_chain(root_fd, subdirs)
                finally:
                    os.close(root_fd)

            dir_fd = self._open_dest(opener, display_bytes(dest_dir or b"/"))
        try:
            self._restore_into(item_id, meta, dir_fd, basename, dest_display)
        finally:
            os.close(dir_fd)
        return Path(os.fsdecode(destination))

    def purge(self, item_id: str) -> None:
        """Delete an item's file and sidecar. QuarantineError when neither exists."""
        check_id(item_id)
        removed = 0
        for name in (item_id, item_id + SIDECAR_SUFFIX):
            try:
                os.unlink(name, dir_fd=self.fd)
                removed += 1
            except FileNotFoundError:
                pass
        if not removed:
            raise QuarantineError(f"no quarantine item {item_id} in {self.path}")
        fsync_dir(self.fd)

    # ------------------------------------------------------------------------------------- internals

    def _is_regular(self, name: str) -> bool:
        try:
            return stat.S_ISREG(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False

    @staticmethod
    def _open_dest(opener: Any, where: str) -> int:
        try:
            return opener()
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                why = "a symbolic link or non-directory on the way (links are not followed)"
            elif exc.errno == errno.ENOENT:
                why = "it no longer exists (restore with --to DIR)"
            else:
                why = exc.strerror or str(exc)
            raise QuarantineError(f"cannot open destination directory {where}: {why}") from None

    def _restore_into(self, item_id: str, meta: dict[str, Any], dir_fd: int, name: bytes, dest: str) -> None:
        try:
            fd = os.open(item_id, _FILE_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            raise QuarantineError(f"quarantine item {item_id} has a sidecar but no file") from None
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise QuarantineError(f"quarantine item {item_id} is not a regular file")
            expected = meta.get("sha256")
            unread = expected is None and "unread" in meta
            if unread:
                _check_unread_unchanged(item_id, meta, before)
            # An item quarantined unread (too large, unreadable) has no recorded hash to check against.
            digest = _hash_fd(fd) if not unread else None
            after = os.fstat(fd)
            if digest != expected or (before.st_size, before.st_mtime_ns) != (
                after.st_size,
                after.st_mtime_ns,
            ):
                raise QuarantineError(
                    f"quarantine item {item_id} was altered: sha256 {digest} does not match the recorded"
                    f" {meta.get('sha256')}; not restored"
                )
            try:
                rename_noreplace(self.fd, item_id, dir_fd, name)
                copied = False
            except FileExistsError:
                raise QuarantineError(f"destination exists: {dest}") from None
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise QuarantineError(f"cannot restore to {dest}: {exc.strerror}") from None
                out = self._copy_out(fd, expected, dir_fd, name, dest)
                os.close(fd)
                fd, copied = out, True
            _restore_metadata(fd, meta)
            if copied and isinstance(meta.get("mtime_ns"), int):
                os.utime(fd, ns=(meta["mtime_ns"], meta["mtime_ns"]))
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(dir_fd)
        if copied:
            os.unlink(item_id, dir_fd=self.fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(item_id + SIDECAR_SUFFIX, dir_fd=self.fd)
        fsync_dir(self.fd)

    @staticmethod
    def _copy_out(src_fd: int, sha256: str | None, dir_fd: int, name: bytes, dest: str) -> int:
        """Another file system: copy with O_EXCL (never replaces), verifying the hash of what was copied."""
        try:
            out = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            raise QuarantineError(f"destination exists: {dest}") from None
        except OSError as exc:
            raise QuarantineError(f"cannot create {dest}: {exc.strerror}") from None
        try:
            digest = hashlib.sha256()
            offset = 0
            while chunk := os.pread(src_fd, _CHUNK, offset):
                digest.update(chunk)
                _write_all(out, chunk)
                offset += len(chunk)
            if sha256 is not None and digest.hexdigest() != sha256:
                raise QuarantineError(f"quarantined bytes changed while copying to {dest}; not restored")
        except BaseException:
            os.close(out)
            os.unlink(name, dir_fd=dir_fd)
            raise
        return out


def stored_identity(st: os.stat_result) -> dict[str, int]:
    """What must not change while an item lies in the store unread: its inode, size and times."""
    return {
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def _give(fd: int, uid: int, gid: int) -> None:
    """chown to (uid, gid) as root; otherwise only the group, and only where we belong to it."""
    if os.geteuid() == 0:
        os.fchown(fd, uid, gid)
        return
    with contextlib.suppress(PermissionError):
        os.fchown(fd, -1, gid)


def _check_unread_unchanged(item_id: str, meta: dict[str, Any], st: os.stat_result) -> None:
    """An item quarantined unread has no hash: its identity in the store stands in for one. A writer that
    kept a descriptor on it could have changed it there; then it does not go back. (Sidecars written
    before identities were kept have none; such an item is judged again once restored, like any unread
    item.)"""
    recorded = meta.get("stored_identity")
    if recorded is None:
        return
    now = stored_identity(st)
    changed = [key for key in now if not isinstance(recorded, dict) or recorded.get(key) != now[key]]
    if changed:
        raise QuarantineError(
            f"quarantine item {item_id} changed after it was quarantined ({', '.join(changed)} differ"
            " from its sidecar's stored_identity); not restored"
        )


def _restore_metadata(fd: int, meta: dict[str, Any]) -> None:
    """Owner first when root (chown clears set-id bits), then the permission bits."""
    owner = meta.get("owner") or {}
    if os.geteuid() == 0 and isinstance(owner.get("uid"), int) and isinstance(owner.get("gid"), int):
        os.fchown(fd, owner["uid"], owner["gid"])
    try:
        mode = int(str(meta.get("mode")), 8) & 0o777
    except ValueError:
        mode = 0o600
    os.fchmod(fd, mode)


def _hash_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _read_limited(fd: int, limit: int) -> bytes:
    chunks, total = [], 0
    while chunk := os.read(fd, _CHUNK):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise QuarantineError(f"sidecar larger than {limit} bytes")
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
