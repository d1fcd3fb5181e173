"""Per-install secret keys kept in the state directory (created once, 0600, never logged)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def load_or_create_key(directory: Path, name: str) -> bytes:
    """Return the key stored as `<directory>/keys/<name>.key`, creating it atomically if absent.

    Creation uses O_EXCL on a temporary name and link(2) into place, so two processes racing to
    create the key end up sharing whichever landed first.
    """
    key_dir = directory / "keys"
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = key_dir / f"{name}.key"
    try:
        return read_key(path)
    except FileNotFoundError:
        pass
    tmp = key_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES).hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return read_key(path)


def read_key(path: Path) -> bytes:
    """A key file: hex, at least 16 bytes; never followed through a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(256).strip()
    key = bytes.fromhex(raw.decode("ascii"))
    if len(key) < 16:
        raise ValueError(f"key file {path} is too short")
    return key


def user_state_dir() -> Path:
    """Where a non-root `dropwarden scan` keeps its keys when the configured state dir is not writable."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "dropwarden"


def usable_state_dir(configured: Path) -> Path:
    """The configured state dir when it is (or can be made) writable, else the per-user fallback."""
    try:
        configured.mkdir(mode=0o750, parents=True, exist_ok=True)
        if os.access(configured, os.W_OK | os.X_OK):
            return configured
    except OSError:
        pass
    return user_state_dir()
