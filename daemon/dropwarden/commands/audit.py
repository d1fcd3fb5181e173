"""`dropwarden audit verify`: check the tamper-evident audit log (chain, checkpoint MACs, anchor)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from dropwarden.audit import log_identity, verify
from dropwarden.audit.chain import key_id
from dropwarden.audit.store import anchor_path, k0_path, read_key_file
from dropwarden.cli import EXIT_USAGE, app_context, config_option

EXIT_DAMAGED = 1

_file = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@click.argument("path", type=_file)
@click.option(
    "--key", "key_file", type=_file, help="K_0 file (hex), as copied from <state>/keys/audit-k0.key."
)
@click.option(
    "--anchor", "anchor_file", type=_file, help="Anchor file, as copied from <state>/audit-anchor.json."
)
@config_option
@click.pass_context
def verify_command(
    ctx: click.Context, path: Path, key_file: Path | None, anchor_file: Path | None, config_path: Path | None
) -> None:
    """Check the audit log at PATH: exit 0 when intact, 1 naming the first bad record.

    K_0 and the anchor are taken from the configured state directory when they belong to this log
    (--key/--anchor override). Without K_0 only the hash chain is checked: checkpoints' MACs are not.
    Without the anchor, a tail truncated past a checkpoint goes unnoticed.
    """
    notes: list[str] = []
    k0 = _load_key(key_file) if key_file else None
    anchor = _load_anchor(anchor_file) if anchor_file else None
    if key_file is None or anchor_file is None:
        settings = app_context(ctx, config_path).config().settings
        identity = log_identity(path)
        live = _same_file(path, settings.audit.path)
        if key_file is None:
            k0 = _default_key(settings.state.dir, identity, live, notes)
        if anchor_file is None:
            anchor = _default_anchor(settings.state.dir, identity, live, notes)
    try:
        result = verify(path, k0, anchor)
    except OSError as exc:
        click.echo(f"dropwarden audit verify: cannot read {path}: {exc.strerror}", err=True)
        ctx.exit(EXIT_USAGE)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if not result.ok:
        click.echo(
            f"{path}: DAMAGED at line {result.first_bad_line} (seq {result.first_bad_seq}): {result.message}"
        )
        ctx.exit(EXIT_DAMAGED)
    macs = "MACs verified" if result.macs_verified else "MACs NOT verified: no K_0"
    anchor_state = "anchor matched" if result.anchor_checked else "no anchor checked"
    click.echo(
        f"{path}: OK: {result.records} records, last seq {result.last_seq},"
        f" {result.checkpoints} checkpoints, {macs}, {anchor_state}"
    )


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
