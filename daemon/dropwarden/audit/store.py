"""Small files beside the audit log: atomic replace with scrubbing, the anchor, the forward key, K_0 files.

The anchor (`<state>/audit-anchor.json`) names the durable chain head (`log_id`, `seq`, `hash`) and the
last checkpoint (`checkpoint`: `seq`, `hash`, `epoch`, byte `offset`). Anchors written before heads were
anchored hold only the checkpoint, at the top level."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from dropwarden.audit.chain import AuditError

ANCHOR_FILE = "audit-anchor.json"
K0_NAME = "audit-k0"
CURRENT_KEY_FILE = "audit-current.json"


def anchor_path(state_dir: Path) -> Path:
    return state_dir / ANCHOR_FILE


def k0_path(state_dir: Path) -> Path:
    """Where `keys.load_or_create_key(state_dir, K0_NAME)` keeps K_0."""
    return state_dir / "keys" / f"{K0_NAME}.key"


def current_key_path(state_dir: Path) -> Path:
    return state_dir / "keys" / CURRENT_KEY_FILE


def anchored_checkpoint(anchor: dict[str, Any]) -> dict[str, Any] | None:
    """The last checkpoint an anchor names (seq, hash, epoch, offset), None when it names none or is
    malformed."""
    point = anchor.get("checkpoint", anchor)
    if not isinstance(point, dict):
        return None
    fields = {k: point.get(k) for k in ("seq", "hash", "epoch", "offset")}
    if not all(
        isinstance(fields[k], int) and not isinstance(fields[k], bool) for k in ("seq", "epoch", "offset")
    ):
        return None
    return fields if isinstance(fields["hash"], str) else None


def k0_on_host(state_dir: Path) -> Path | None:
    """K_0's file when it is still in the state directory (whoever can read it can forge the log)."""
    path = k0_path(state_dir)
    try:
        os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError:  # unreadable to us: it is there all the same
        return path
    return path


def remove_key_file(path: Path) -> None:
    """Overwrite a key file with zeros, fsync, unlink it and fsync its directory (best effort against
    recovery: copy-on-write filesystems and SSD remapping may keep old blocks)."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.pwrite(fd, b"\0" * os.fstat(fd).st_size, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path, data: bytes, *, mode: int = 0o600, scrub_old: bool = False, sync_dir: bool = True
) -> None:
    """Replace `path`: write a temporary file, fsync, rename over, fsync the directory.

    With `scrub_old`, the replaced file's bytes are then overwritten with zeros and fsynced (best effort:
    copy-on-write filesystems and SSD remapping may keep old blocks). Without `sync_dir` the rename may
    be lost in a crash: then the file still holds its previous (complete) content."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    old = -1
    if scrub_old:
        try:
            old = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            old = -1
    try:
        os.replace(tmp, path)
        if sync_dir:
            fsync_dir(path.parent)
        if old >= 0:
            size = os.fstat(old).st_size
            os.pwrite(old, b"\0" * size, 0)
            os.fsync(old)
    finally:
        if old >= 0:
            os.close(old)


def read_json(path: Path, what: str) -> dict[str, Any] | None:
    """The JSON object in `path`, None when absent; AuditError when unreadable or not an object."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AuditError(f"{what} {path} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise AuditError(f"{what} {path} is not a JSON object")
    return data


def write_json(
    path: Path, data: dict[str, Any], *, mode: int = 0o600, scrub_old: bool = False, sync_dir: bool = True
) -> None:
    body = json.dumps(data, sort_keys=True).encode() + b"\n"
    atomic_write(path, body, mode=mode, scrub_old=scrub_old, sync_dir=sync_dir)


def read_key_file(path: Path) -> bytes:
    """A key file as `keys.load_or_create_key` writes it (hex on one line); ValueError when malformed."""
    raw = path.read_bytes()[:4096].strip()
    try:
        key = bytes.fromhex(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{path} does not hold a hex key") from None
    if len(key) < 16:
        raise ValueError(f"{path} holds a key that is too short")
    return key
