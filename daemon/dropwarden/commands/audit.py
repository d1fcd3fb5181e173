"""`dropwarden audit verify`: check the tamper-evident audit log (chain, checkpoint MACs, anchor)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from dropwarden.audit import log_identity, previous_log, verify
from dropwarden.audit.chain import key_id
from dropwarden.audit.store import anchor_path, k0_path, read_key_file
from dropwarden.cli import EXIT_USAGE, app_context, config_option

EXIT_DAMAGED = 1

_file = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@click.argument("paths", nargs=-1, required=True, type=_file)
@click.option(
    "--key", "key_file", type=_file, help="K_0 file (hex), as copied from <state>/keys/audit-k0.key."
)
@click.option(
    "--anchor",
    "anchor_file",
    type=_file,
    help="Anchor file, as copied from <state>/audit-anchor.json (for the newest PATH).",
)
@config_option
@click.pass_context
def verify_command(
    ctx: click.Context,
    paths: tuple[Path, ...],
    key_file: Path | None,
    anchor_file: Path | None,
    config_path: Path | None,
) -> None:
    """Check the audit log at PATH: exit 0 when intact, 1 naming the first bad record.

    K_0 and the anchor are taken from the configured state directory when they belong to this log
    (--key/--anchor override). Without K_0 only the hash chain is checked: checkpoints' MACs are not.
    Without the anchor, a tail truncated past a checkpoint goes unnoticed.

    Rotated files are checked together, oldest first (audit.jsonl-1 audit.jsonl-2 audit.jsonl): each
    file must continue the one before it (its first record names that file's last checkpoint), and
    that link anchors the older file, so a file left out, or truncated, shows.
    """
    notes: list[str] = []
    k0_given = _load_key(key_file) if key_file else None
    settings = (
        app_context(ctx, config_path).config().settings if key_file is None or anchor_file is None else None
    )
    damaged = False
    for index, path in enumerate(paths):
        later = paths[index + 1] if index + 1 < len(paths) else None
        identity = log_identity(path)
        live = settings is not None and _same_file(path, settings.audit.path)
        k0 = k0_given
        if k0 is None and settings is not None:
            k0 = _default_key(settings.state.dir, identity, live, notes)
        if later is not None:
            anchor = previous_log(later)
            if anchor is None or identity is None or anchor["log_id"] != identity[0]:
                names = f"log {anchor['log_id']}" if anchor else "no previous log"
                click.echo(
                    f"{later}: DAMAGED at line 1 (seq 0): it does not continue {path} (it names {names})"
                )
                damaged = True
                anchor = None
        elif anchor_file is not None:
            anchor = _load_anchor(anchor_file)
        else:
            assert settings is not None
            anchor = _default_anchor(settings.state.dir, identity, live, notes)
        try:
            result = verify(path, k0, anchor)
        except OSError as exc:
            click.echo(f"dropwarden audit verify: cannot read {path}: {exc.strerror}", err=True)
            ctx.exit(EXIT_USAGE)
        if result.ok and later is not None and anchor is not None and result.last_seq != anchor["seq"]:
            notes.append(
                f"{path}: {result.last_seq - anchor['seq']} records follow the checkpoint {later} names"
                " (an unclean stop before the next file was started)"
            )
        if not result.ok:
            where = f"line {result.first_bad_line} (seq {result.first_bad_seq})"
            click.echo(f"{path}: DAMAGED at {where}: {result.message}")
            damaged = True
            continue
        macs = "MACs verified" if result.macs_verified else "MACs NOT verified: no K_0"
        if result.anchor_checked:
            anchor_state = f"continued by {later}" if later is not None else "anchor matched"
        else:
            anchor_state = "no anchor checked"
        click.echo(
            f"{path}: OK: {result.records} records, last seq {result.last_seq},"
            f" {result.checkpoints} checkpoints, {macs}, {anchor_state}"
        )
    for note in dict.fromkeys(notes):
        click.echo(f"note: {note}", err=True)
    if damaged:
        ctx.exit(EXIT_DAMAGED)


def _load_key(path: Path) -> bytes:
    try:
        return read_key_file(path)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--key") from None


def _load_anchor(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--anchor") from None
    if not (
        isinstance(data, dict)
        and isinstance(data.get("log_id"), str)
        and isinstance(data.get("seq"), int)
        and isinstance(data.get("hash"), str)
    ):
        raise click.BadParameter(f"{path} is not an audit anchor (log_id, seq, hash)", param_hint="--anchor")
    return data


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _default_key(state: Path, identity: tuple[str, str] | None, live: bool, notes: list[str]) -> bytes | None:
    """The state directory's K_0 when it is this log's (or when PATH is the configured log: then a
    mismatch is reported as damage rather than skipped)."""
    path = k0_path(state)
    try:
        k0 = read_key_file(path)
    except FileNotFoundError:
        notes.append(f"no K_0 at {path}: checkpoint MACs not verified (copy it back or pass --key)")
        return None
    except (OSError, ValueError) as exc:
        notes.append(f"cannot use K_0 at {path} ({exc}): checkpoint MACs not verified (pass --key)")
        return None
    if live or (identity is not None and key_id(k0) == identity[1]):
        return k0
    notes.append(f"K_0 at {path} belongs to another log: checkpoint MACs not verified (pass --key)")
    return None


def _default_anchor(
    state: Path, identity: tuple[str, str] | None, live: bool, notes: list[str]
) -> dict[str, Any] | None:
    path = anchor_path(state)
    try:
        anchor = _load_anchor(path) if path.exists() else None
    except click.BadParameter as exc:
        notes.append(f"ignoring anchor: {exc.message}")
        return None
    if anchor is None:
        notes.append(f"no anchor at {path}: truncation past the last checkpoint not checked")
        return None
    if live or (identity is not None and anchor["log_id"] == identity[0]):
        return anchor
    notes.append(f"anchor at {path} belongs to another log: truncation past the last checkpoint not checked")
    return None
