"""`dropwarden quarantine list|show|restore|purge`: inspect and release quarantined files, audited."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from dropwarden.act.quarantine import QuarantineError, QuarantineStore, default_quarantine_dir
from dropwarden.act.sidecar import destination_of, display_bytes, is_item_id
from dropwarden.audit import AuditError
from dropwarden.audit.spool import record_event
from dropwarden.commands._app import EXIT_USAGE, app_context, config_option
from dropwarden.config import Settings, WatchSettings
from dropwarden.judge.names import redact_path
from dropwarden.runtime import build_runtime
from dropwarden.state import State

EXIT_REFUSED = 1


def audit_event(settings: Settings, type: str, body: dict[str, Any]) -> int | None:
    """Append one record to the configured audit log and close it (durable on return): the record's seq,
    or None, with the reason on stderr, when the log cannot be opened or written (e.g. a running daemon
    holds its lock)."""
    try:
        return record_event(settings, type, body)
    except (AuditError, OSError, ValueError, TypeError) as exc:
        click.echo(f"dropwarden: audit log unavailable: {exc}", err=True)
        return None


@click.group()
def quarantine() -> None:
    """Quarantined files: list, show, restore, purge.

    Exit status: 0 done, 1 refused (unknown id, altered bytes or an unread item changed after it was
    quarantined, destination exists, audit log unavailable), 2 usage or configuration error. Restore
    and purge are recorded in the audit log and are not performed when it cannot be written (while
    the daemon runs it holds the log).
    """


def _item_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    value = value.strip().lower()
    if not is_item_id(value):
        raise click.BadParameter("a quarantine id is 32 hexadecimal digits (see `quarantine list`)")
    return value


_id_argument = click.argument("item_id", metavar="ID", callback=_item_id)


@quarantine.command("list")
@click.option("--watch", "watch_name", help="Only this watch (its name, or its path when unnamed).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@config_option
@click.pass_context
def list_command(ctx: click.Context, watch_name: str | None, as_json: bool, config_path: Path | None) -> None:
    """List quarantined files, oldest first."""
    settings = app_context(ctx, config_path).config().settings
    watches = settings.watch
    if watch_name is not None:
        watches = [w for w in watches if w.id == watch_name]
        if not watches:
            known = ", ".join(w.id for w in settings.watch) or "none configured"
            click.echo(f"dropwarden: no watch named {watch_name!r} (watches: {known})", err=True)
            sys.exit(EXIT_USAGE)
    items: list[dict[str, Any]] = []
    failed = False
    for watch in watches:
        try:
            store = _open_store(watch)
        except QuarantineError as exc:
            click.echo(f"dropwarden: watch {watch.id}: {exc}", err=True)
            failed = True
            continue
        if store is None:
            continue
        with store:
            for item in store.list_items():
                items.append({**item, "watch": item.get("watch", watch.id), "store": str(store.path)})
    items.sort(key=lambda item: (str(item.get("quarantined_at", "")), item["id"]))
    if as_json:
        click.echo(json.dumps(items, indent=2, ensure_ascii=False))
    else:
        _print_table(items)
    if failed:
        sys.exit(EXIT_REFUSED)


@quarantine.command("show")
@_id_argument
@config_option
@click.pass_context
def show_command(ctx: click.Context, item_id: str, config_path: Path | None) -> None:
    """Print everything recorded about one quarantined file (JSON)."""
    settings = app_context(ctx, config_path).config().settings
    watch, store = _locate(settings, item_id)
    with store:
        item = next(i for i in store.list_items() if i["id"] == item_id)
    click.echo(
        json.dumps(
            {**item, "watch": item.get("watch", watch.id), "store": str(store.path)},
            indent=2,
            ensure_ascii=False,
        )
    )


@quarantine.command("restore")
@_id_argument
@click.option(
    "--to",
    "to_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Restore into this directory (under the original name) instead of the original path.",
)
@config_option
@click.pass_context
def restore_command(ctx: click.Context, item_id: str, to_dir: Path | None, config_path: Path | None) -> None:
    """Move a quarantined file back, to its original path or into --to DIR.

    Refused when its bytes no longer match the recorded sha256, or when the destination exists
    (nothing is ever overwritten). Permission bits and, when run as root, the owner are restored.
    The restored file is marked as released by an operator, there and once: a daemon watching the
    destination records its next judgement (outcome `operator_released`) instead of quarantining it
    again. The same content arriving anywhere else, or again, is judged and alerted on as usual.
    An item quarantined unread (too large, unreadable) has no hash: it is refused when its identity
    in the store (inode, size, times) changed since, and once restored it is judged again like any
    new file (quarantined again if it is still too large).
    """
    settings = app_context(ctx, config_path).config().settings
    watch, store = _locate(settings, item_id)
    with store:
        try:
            meta = store.read_sidecar(item_id)
            target = destination_of(meta, to_dir)
            destination = display_bytes(target)
        except QuarantineError as exc:
            _refuse(f"not restored: {exc}")
        with _PathMasker(settings) as mask:
            shown_original = mask.original(meta)
            folder, _, basename = target.rpartition(b"/")
            shown = shown_original if to_dir is None else mask(folder or b"/", basename)
        body = {
            "id": item_id,
            "watch": meta.get("watch", watch.id),
            "sha256": meta.get("sha256"),
            "original_path": shown_original,
            "destination": shown,
            "operator_uid": os.getuid(),
        }
        intent = audit_event(settings, "quarantine.restore", {**body, "phase": "intent"})
        if intent is None:
            _refuse(f"not restored: {item_id} cannot be restored without an audit record")
        # Mark this file, at its destination, as released by an operator first, so a daemon watching
        # there does not quarantine it again the moment it lands.
        state = State(settings.state.dir / "state.db")
        sha256 = meta.get("sha256") if isinstance(meta.get("sha256"), str) else None
        # Only judged content is released: an item quarantined unread is judged again where it lands.
        releases = [
            state.allow_operator_release(watch_id, relpath, sha256, item_id)
            for watch_id, relpath in (_watched_as(settings, target) if sha256 is not None else [])
        ]
        try:
            restored = store.restore(item_id, to_dir)
        except (QuarantineError, OSError) as exc:
            for release in releases:
                state.revoke_operator_release(release)
            state.close()
            audit_event(
                settings,
                "quarantine.restore",
                {
                    **body,
                    "phase": "refused",
                    "intent_seq": intent,
                    "error": str(exc).replace(destination, shown),
                },
            )
            _refuse(f"not restored: {exc}")
    state.close()
    done = {**body, "phase": "done"}
    if audit_event(settings, "quarantine.restore", {**done, "intent_seq": intent}) is None:
        click.echo(f"restored {item_id} to {display_bytes(os.fsencode(restored))}")
        _refuse("the restore happened but its completion could not be audited (the intent record was)")
    click.echo(f"restored {item_id} to {display_bytes(os.fsencode(restored))}")


@quarantine.command("purge")
@_id_argument
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@config_option
@click.pass_context
def purge_command(ctx: click.Context, item_id: str, yes: bool, config_path: Path | None) -> None:
    """Delete a quarantined file and its sidecar for good."""
    settings = app_context(ctx, config_path).config().settings
    watch, store = _locate(settings, item_id)
    with store:
        meta: dict[str, Any] = {}
        if store.has_sidecar(item_id):
            try:
                meta = store.read_sidecar(item_id)
            except QuarantineError as exc:
                click.echo(f"warning: {exc}", err=True)
        sha256 = meta.get("sha256")
        if sha256 is None and store.has_item(item_id):
            try:
                sha256 = store.hash_item(item_id)
            except QuarantineError as exc:
                click.echo(f"warning: {exc}", err=True)
        original = meta.get("original_path", "(no sidecar)")
        if not yes:
            try:
                confirmed = click.confirm(f"Delete {item_id} ({original}) for good?", default=False)
            except click.Abort:
                confirmed = False
            if not confirmed:
                _refuse(f"not purged: {item_id} (confirm, or pass --yes)")
        with _PathMasker(settings) as mask:
            shown_original = mask.original(meta) if meta else original
        body = {
            "id": item_id,
            "watch": meta.get("watch", watch.id),
            "sha256": sha256,
            "original_path": shown_original,
            "operator_uid": os.getuid(),
        }
        intent = audit_event(settings, "quarantine.purge", {**body, "phase": "intent"})
        if intent is None:
            _refuse(f"not purged: {item_id} cannot be purged without an audit record")
        try:
            store.purge(item_id)
        except (QuarantineError, OSError) as exc:
            audit_event(
                settings,
                "quarantine.purge",
                {**body, "phase": "refused", "intent_seq": intent, "error": str(exc)},
            )
            _refuse(f"not purged: {exc}")
    if audit_event(settings, "quarantine.purge", {**body, "phase": "done", "intent_seq": intent}) is None:
        click.echo(f"purged {item_id}")
        _refuse("the purge happened but its completion could not be audited (the intent record was)")
    click.echo(f"purged {item_id}")


def _watched_as(settings: Settings, destination: bytes) -> list[tuple[str, bytes]]:
    """(watch id, path below its root) for every configured watch that will see `destination`; the
    directories are compared resolved, as the daemon's open directory is the real one."""
    parent, _, name = destination.rpartition(b"/")
    real = os.path.realpath(parent or b"/").rstrip(b"/") + b"/" + name
    found = []
    for watch in settings.watch:
        root = os.path.realpath(os.fsencode(watch.path)).rstrip(b"/")
        if real.startswith(root + b"/"):
            relpath = real[len(root) + 1 :]
            if watch.recursive or b"/" not in relpath:
                found.append((watch.id, relpath))
    return found


class _PathMasker:
    """Paths for audit records as the daemon records them: the name judged by the configured rules,
    each matched span masked (all of the name when the rules cannot be loaded). The exact path is in
    the sidecar, and in what these commands print for the operator who reads it."""

    def __init__(self, settings: Settings) -> None:
        try:
            self._runtime = build_runtime(settings)
        except Exception:  # a plugin that fails to load: mask whole names rather than show them
            self._runtime = None

    def __enter__(self) -> _PathMasker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runtime is not None:
            self._runtime.close()

    def __call__(self, root: bytes, relative: bytes) -> str:
        name = self._runtime.judge.judge_relative_name(relative)[0] if self._runtime else None
        return display_bytes(redact_path(os.fsdecode(root), relative, name)[1])

    def original(self, meta: dict[str, Any]) -> str:
        """The item's original path, masked (the whole path when the sidecar's paths are unusable)."""
        try:
            original = destination_of(meta, None)
            relative = base64.b64decode(str(meta["relative_path_b64"]), validate=True)
        except (QuarantineError, KeyError, ValueError):
            return "(unusable sidecar path)"
        return self(original[: len(original) - len(relative) - 1] or b"/", relative)


def _open_store(watch: WatchSettings) -> QuarantineStore | None:
    """The watch's store, or None when it was never created. QuarantineError when it is refused."""
    path = default_quarantine_dir(watch)
    if not os.path.lexists(path):
        return None
    return QuarantineStore.open(path, same_fs_as_fd=None, create=False)


def _locate(settings: Settings, item_id: str) -> tuple[WatchSettings, QuarantineStore]:
    """The watch whose store holds `item_id` (file or sidecar), with its store open; exits 1 if none."""
    found: list[tuple[WatchSettings, QuarantineStore]] = []
    problems = 0
    for watch in settings.watch:
        try:
            store = _open_store(watch)
        except QuarantineError as exc:
            click.echo(f"dropwarden: watch {watch.id}: {exc}", err=True)
            problems += 1
            continue
        if store is None:
            continue
        if store.has_item(item_id) or store.has_sidecar(item_id):
            found.append((watch, store))
        else:
            store.close()
    if len(found) == 1:
        return found[0]
    for _, store in found:
        store.close()
    if found:
        _refuse(f"quarantine id {item_id} is in several stores: " + ", ".join(str(s.path) for _, s in found))
    unread = f" ({problems} store(s) could not be read)" if problems else ""
    _refuse(f"unknown quarantine id {item_id}{unread}")


def _refuse(message: str) -> NoReturn:
    click.echo(f"dropwarden: {message}", err=True)
    sys.exit(EXIT_REFUSED)


def _print_table(items: list[dict[str, Any]]) -> None:
    if not items:
        click.echo("no quarantined files")
        return
    rows = [("ID", "WATCH", "QUARANTINED AT", "SIZE", "VERDICT", "ORIGINAL PATH")]
    for item in items:
        if not item.get("sidecar"):
            verdict, path = "?", "(no sidecar)" if item.get("file") else "(sidecar unreadable)"
        else:
            verdict = str(item.get("verdict", "?"))
            path = str(item.get("original_path", "?")) + ("" if item.get("file") else "  [file missing]")
        rows.append(
            (
                item["id"],
                str(item["watch"]),
                str(item.get("quarantined_at", "?")),
                str(item.get("size", "?")),
                verdict,
                path,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[5]
        )
