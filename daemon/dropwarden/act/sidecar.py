"""Quarantine sidecars: the record kept beside each quarantined file, and where restore puts it back."""

from __future__ import annotations

import base64
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dropwarden import __version__
from dropwarden.act.quarantine_dir import QuarantineError
from dropwarden.judge.intake import Snapshot

SIDECAR_FORMAT = 1


_ID_RE = re.compile(r"[0-9a-f]{32}")


def display_bytes(raw: bytes) -> str:
    """A one-line, printable rendering of a path's bytes: invalid UTF-8 and control characters escaped."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def is_item_id(value: str) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def sidecar_for(
    snapshot: Snapshot,
    *,
    item_id: str,
    watch_id: str,
    watch_root: Path,
    relative_path: bytes,
    verdict: Any,
    reason: Any,
    findings: list[dict[str, Any]],
    audit_seq: int | None,
) -> dict[str, Any]:
    """The sidecar describing a quarantined snapshot. `relative_path` is the path's bytes below the watch
    root (subdirectories included); verdict and reason may be enums or strings."""
    return _sidecar(
        item_id=item_id,
        watch_id=watch_id,
        watch_root=watch_root,
        relative_path=relative_path,
        file={
            "owner": {"uid": snapshot.uid, "gid": snapshot.gid},
            "mode": format(stat.S_IMODE(snapshot.mode), "04o"),
            "size": snapshot.identity.size,
            "mtime_ns": snapshot.identity.mtime_ns,
            "ctime_ns": snapshot.ctime_ns,
            "sha256": snapshot.sha256,
        },
        verdict=verdict,
        reason=reason,
        findings=findings,
        audit_seq=audit_seq,
    )


def sidecar_for_unread(
    st: os.stat_result,
    *,
    item_id: str,
    watch_id: str,
    watch_root: Path,
    relative_path: bytes,
    verdict: Any,
    reason: Any,
    audit_seq: int | None,
    why: str,
) -> dict[str, Any]:
    """The sidecar of a file quarantined without being read (too large, unreadable): its metadata from
    `st`, `sha256` null and `unread` saying why (restore cannot check bytes nobody read; the mover adds
    `stored_identity`, `QuarantineStore.seal_unread`, which restore checks instead)."""
    return _sidecar(
        item_id=item_id,
        watch_id=watch_id,
        watch_root=watch_root,
        relative_path=relative_path,
        file={
            "owner": {"uid": st.st_uid, "gid": st.st_gid},
            "mode": format(stat.S_IMODE(st.st_mode), "04o"),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns,
            "sha256": None,
            "unread": why,
        },
        verdict=verdict,
        reason=reason,
        findings=[],
        audit_seq=audit_seq,
    )


def _sidecar(
    *,
    item_id: str,
    watch_id: str,
    watch_root: Path,
    relative_path: bytes,
    file: dict[str, Any],
    verdict: Any,
    reason: Any,
    findings: list[dict[str, Any]],
    audit_seq: int | None,
) -> dict[str, Any]:
    check_id(item_id)
    relative = relative_path.strip(b"/")
    if not relative or any(part in (b"", b".", b"..") for part in relative.split(b"/")):
        raise ValueError(f"not a relative path below the watch root: {relative_path!r}")
    original = os.fsencode(watch_root).rstrip(b"/") + b"/" + relative
    return {
        "format": SIDECAR_FORMAT,
        "id": item_id,
        "original_path": display_bytes(original),
        "original_path_b64": _b64(original),
        "watch": watch_id,
        "relative_path_b64": _b64(relative),
        **file,
        "verdict": _plain(verdict),
        "reason": _plain(reason),
        "findings": list(findings),
        "audit_seq": audit_seq,
        "quarantined_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "dropwarden_version": __version__,
    }


def destination_of(meta: dict[str, Any], to_dir: Path | None) -> bytes:
    """Where `restore` puts an item: `to_dir/<original name>`, or the original path (bytes).
    QuarantineError when the sidecar's paths are unusable."""
    original = unb64(meta, "original_path_b64")
    relative = unb64(meta, "relative_path_b64")
    parts = relative.split(b"/")
    if any(part in (b"", b".", b"..") for part in parts) or not original.endswith(b"/" + relative):
        raise QuarantineError(f"sidecar of {meta.get('id')} holds unusable original/relative paths")
    if to_dir is None:
        return original
    return os.fsencode(os.path.abspath(to_dir)).rstrip(b"/") + b"/" + parts[-1]


def check_id(item_id: str) -> None:
    if not is_item_id(item_id):
        raise QuarantineError(f"not a quarantine id: {item_id!r} (32 lowercase hex digits)")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(meta: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(str(meta[key]), validate=True)
    except (KeyError, ValueError):
        raise QuarantineError(f"sidecar of {meta.get('id')} lacks a valid {key}") from None


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)
