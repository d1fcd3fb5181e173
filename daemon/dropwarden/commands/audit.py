"""`dropwarden audit verify | export-key`: check the tamper-evident audit log (chain, checkpoint MACs,
anchor); take K_0 off the host."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from dropwarden.audit import AuditError, VerifyResult, log_identity, previous_log, verify
from dropwarden.audit.chain import evolve_to, key_id, new_log_advice
from dropwarden.audit.store import (
    anchor_path,
    current_key_path,
    k0_path,
    read_json,
    read_key_file,
    remove_key_file,
)
from dropwarden.commands._app import EXIT_USAGE, app_context, config_option
from dropwarden.config import Settings

EXIT_DAMAGED = 1
EXIT_KEPT = 1

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
    help="Anchor for the newest PATH: a copy of <state>/audit-anchor.json, or an alert or audit.head event"
    " from an alert sink (its dropwarden.audit_head).",
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
    (--key/--anchor override). Without K_0 (exported with `dropwarden audit export-key`) the hash chain
    and the anchor are checked, checkpoints' MACs are not. The anchor names the durable chain head:
    the log must reach it unchanged. Records after the last checkpoint are covered by the anchor only;
    records after the anchored head by the chain only (both counts are printed).

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
            if live and "Next:" not in result.message:
                advice = new_log_advice(str(path.absolute()))
                click.echo(f"{path}: the daemon will not write to it. Next: {advice}")
            damaged = True
            continue
        macs = "MACs verified" if result.macs_verified else "MACs NOT verified: no K_0"
        if result.anchor_checked:
            anchor_state = f"continued by {later}" if later is not None else "anchor matched"
        else:
            anchor_state = "no anchor checked"
        click.echo(
            f"{path}: OK: {result.records} records, last seq {result.last_seq},"
            f" {result.checkpoints} checkpoints, {macs}, {anchor_state}{_coverage(result)}"
        )
    for note in dict.fromkeys(notes):
        click.echo(f"note: {note}", err=True)
    if damaged:
        ctx.exit(EXIT_DAMAGED)


def _coverage(result: VerifyResult) -> str:
    """What protects the records after the last checkpoint (no MAC covers them)."""
    after = result.after_checkpoint
    if not after:
        return ""
    since = f"seq {result.last_checkpoint_seq}" if result.last_checkpoint_seq is not None else "none"
    plural = "s" if after > 1 else ""
    return (
        f"; {after} record{plural} after the last checkpoint ({since}): {result.anchored_only} covered by"
        f" the anchor only, {result.unanchored} by the hash chain only"
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
    section = data.get("dropwarden") if isinstance(data, dict) else None
    head = section.get("audit_head") if isinstance(section, dict) else None
    if isinstance(head, dict):  # an alert, or an audit.head event, as a sink received it
        data = head
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
        notes.append(
            f"no K_0 at {path}: checkpoint MACs not verified (pass --key FILE: the K_0 that"
            " `dropwarden audit export-key` printed)"
        )
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


@audit.command("export-key")
@click.option("--yes", is_flag=True, help="Remove K_0 after printing it, without asking (for scripts).")
@config_option
@click.pass_context
def export_key_command(ctx: click.Context, yes: bool, config_path: Path | None) -> None:
    """Print K_0 once for offline storage, then remove it from this host.

    K_0 is printed on standard output as one line of hex (64 digits), exactly as the key file holds
    it: save that line in a file kept off the host; `dropwarden audit verify --key FILE` reads it.
    Whoever can read K_0 can forge the whole log and its anchor. The daemon does not need it: it
    holds only the current evolved key, and new logs (rotation) continue that key chain.

    Removal asks for confirmation on the terminal; --yes removes without asking. Without a terminal
    and without --yes nothing is printed or removed (exit 2). Exit 1 when K_0 is kept.
    """
    settings = app_context(ctx, config_path).config().settings
    if not yes and not sys.stdin.isatty():
        click.echo(
            "dropwarden audit export-key: no terminal to confirm the removal on: pass --yes"
            " (nothing was printed or removed)",
            err=True,
        )
        ctx.exit(EXIT_USAGE)
    path = k0_path(settings.state.dir)
    try:
        k0 = read_key_file(path)
    except FileNotFoundError:
        click.echo(
            f"dropwarden audit export-key: no K_0 at {path}: exported already, or no log yet", err=True
        )
        ctx.exit(EXIT_KEPT)
    except (OSError, ValueError) as exc:
        click.echo(f"dropwarden audit export-key: cannot read {path}: {exc}", err=True)
        ctx.exit(EXIT_KEPT)
    problem = _still_needed(settings, k0)
    if problem is not None:
        click.echo(f"dropwarden audit export-key: K_0 is still needed on this host: {problem}", err=True)
        ctx.exit(EXIT_KEPT)
    name = key_id(k0)
    click.echo(k0.hex())
    click.echo(
        f"K_0 of the audit log (key id {name}), hex, on standard output above: store that line offline"
        " as a file; `dropwarden audit verify --key FILE` reads it.",
        err=True,
    )
    if not yes and not click.confirm(f"Remove K_0 from this host ({path}) now?", default=False, err=True):
        click.echo(f"K_0 kept at {path}: it is still on this host.", err=True)
        ctx.exit(EXIT_KEPT)
    try:
        from dropwarden.audit.spool import record_event

        record_event(settings, "audit.key_exported", {"key_id": name, "path": str(path)})
    except (AuditError, OSError) as exc:
        click.echo(f"warning: the export is not in the audit log: {exc}", err=True)
    try:
        remove_key_file(path)
    except OSError as exc:
        click.echo(f"dropwarden audit export-key: cannot remove {path}: {exc.strerror}", err=True)
        ctx.exit(EXIT_KEPT)
    click.echo(f"K_0 removed from {path} (overwritten, then unlinked).", err=True)


def _still_needed(settings: Settings, k0: bytes) -> str | None:
    """Why the daemon would still need K_0: its evolved key state is missing or not of K_0's chain."""
    where = current_key_path(settings.state.dir)
    try:
        state = read_json(where, "audit key state")
    except AuditError as exc:
        return str(exc)
    if state is None:
        return f"{where} is missing, and the daemon derives its key from K_0 until it has one (start it once)"
    if state.get("key_id") == key_id(k0):
        return None
    try:
        if evolve_to(k0, int(state["epoch"])) == bytes.fromhex(state["key"]):
            return None
    except (KeyError, TypeError, ValueError):
        return f"{where} is malformed"
    return f"{where} belongs to another key: the log may still need K_0 to be reopened"
