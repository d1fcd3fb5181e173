"""`dropwarden doctor`: the core's checks and every plugin's (`dropwarden_doctor_checks`), one line each."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path

import click

from dropwarden.act.quarantine import default_quarantine_dir
from dropwarden.audit.store import current_key_path, k0_on_host
from dropwarden.checks import nearest_existing, path_check
from dropwarden.commands._app import app_context, config_option
from dropwarden.config import Settings, WatchSettings
from dropwarden.hookspecs import Check
from dropwarden.plugins import Plugins, plugins_for
from dropwarden.watch.watch import NETWORK_FILE_SYSTEMS, file_system_type

MAX_USER_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
LABELS = {"ok": "ok", "warn": "warn", "fail": "FAIL"}
WARN_SHARE = 0.8  # more of max_user_watches than this is a warning: the limit is per user, not per process


@click.command()
@config_option
@click.option(
    "--format", "output", type=click.Choice(["text", "json"]), default="text", help="Output format."
)
@click.pass_context
def doctor(ctx: click.Context, config_path: Path | None, output: str) -> None:
    """Check what the daemon needs: each watch (a directory, writable, on the same file system as its
    quarantine and release folders), inotify's max_user_watches, the state and audit paths, each alert
    sink, that the audit log's K_0 is off the host, and every plugin's own checks (the vision endpoint,
    OCR...). One line per check: `ok|warn|FAIL  name: detail`. Exit status 0 when no check fails, else 1."""
    from dropwarden.logs import configure

    configure("warning")
    settings = app_context(ctx, config_path).config().settings
    checks: list[Check] = []
    for check in all_checks(settings):
        checks.append(check)
        if output == "text":
            click.echo(f"{LABELS[check.status]:<4}  {check.name}: {check.detail}")
    failed = any(check.status == "fail" for check in checks)
    if output == "json":
        report = {"ok": not failed, "checks": [vars(check) for check in checks]}
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    sys.exit(1 if failed else 0)


def all_checks(settings: Settings) -> Iterator[Check]:
    """The core's checks, then each loaded plugin's, in plugin name order."""
    for watch in settings.watch:
        yield from watch_checks(watch)
    yield inotify_check(settings.watch, read_max_user_watches())
    yield path_check("state", settings.state.dir, directory=True)
    yield path_check("audit log", settings.audit.path, directory=False)
    yield audit_key_check(settings)
    yield from plugin_checks(plugins_for(settings), settings)


# --------------------------------------------------------------------------------------------- watches


def watch_checks(watch: WatchSettings) -> Iterator[Check]:
    """The watched folder is a directory the daemon could move files out of, into a quarantine and a
    release folder on its own file system (a move must be a rename)."""
    name = f"watch {watch.id}"
    try:
        root = watch.path.stat()
    except OSError as exc:
        yield Check(name, "fail", f"{watch.path}: {exc.strerror}")
        return
    if not watch.path.is_dir():
        yield Check(name, "fail", f"{watch.path} is not a directory")
        return
    acts = bool(watch.on_finding or watch.on_unscanned or watch.release_to)
    if acts and not os.access(watch.path, os.W_OK | os.X_OK):
        yield Check(
            name,
            "fail",
            f"{watch.path} is not writable by this process, so no file could be moved"
            " (with systemd: add it to ReadWritePaths=)",
        )
    else:
        yield Check(name, "ok", f"{watch.path} is a directory" + (", writable" if acts else ""))
    needs_store = (
        "quarantine" in watch.on_finding or "quarantine" in watch.on_unscanned or watch.release_to is not None
    )
    if needs_store:
        yield _beside(f"{name} quarantine", default_quarantine_dir(watch), watch.path, root.st_dev)
    if watch.release_to is not None:
        yield _beside(f"{name} release_to", watch.release_to, watch.path, root.st_dev)
    network = network_check(watch)
    if network is not None:
        yield network


def network_check(watch: WatchSettings, mountinfo: str = "/proc/self/mountinfo") -> Check | None:
    """A warning for an inotify watch on a network file system, where inotify sees only the writes made
    on this host; None otherwise."""
    kind = file_system_type(str(watch.path), mountinfo)
    if watch.observer != "inotify" or kind not in NETWORK_FILE_SYSTEMS:
        return None
    return Check(
        f"watch {watch.id} file system",
        "warn",
        f"{watch.path} is on {kind}: inotify sees only the files written on this host, so files other"
        ' hosts write wait for a reconcile sweep; use observer = "polling" for this watch',
    )


def _beside(name: str, path: Path, watched: Path, device: int) -> Check:
    """A folder the daemon renames into from `watched`: writable, and on the same file system."""
    writable = path_check(name, path, directory=True)
    if writable.status != "ok":
        return writable
    existing = nearest_existing(path)
    if existing.stat().st_dev != device:
        return Check(
            name,
            "fail",
            f"{path} is on another file system than {watched}: a move must be a rename;"
            " put it on the watch's file system",
        )
    return Check(name, "ok", f"{writable.detail}, on the file system of {watched}")


# ------------------------------------------------------------------------------------------ paths


# ------------------------------------------------------------------------------------------ inotify


def read_max_user_watches(source: Path = MAX_USER_WATCHES) -> int | None:
    """The kernel's per-user inotify watch limit; None where it cannot be read (not Linux)."""
    try:
        return int(source.read_text().strip())
    except (OSError, ValueError):
        return None


def count_directories(root: Path, limit: int, *, recursive: bool = True) -> int:
    """The directories an inotify observer watches under `root` (itself included, symlinks not followed),
    counted up to `limit + 1` at most: the count stops as soon as it passes the limit."""
    count, pending = 0, [root]
    while pending and count <= limit:
        directory = pending.pop()
        count += 1
        if not recursive:
            continue
        try:
            with os.scandir(directory) as entries:
                pending.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return count


def inotify_check(watches: Iterable[WatchSettings], limit: int | None) -> Check:
    """The directories the inotify watches need against `max_user_watches` (shared by every process of
    the user, so using most of it is a warning, more than all of it a failure)."""
    name = "inotify"
    watched = [w for w in watches if w.observer == "inotify" and w.path.is_dir()]
    if limit is None:
        return Check(name, "warn", f"cannot read {MAX_USER_WATCHES}: not checked")
    total = 0
    for watch in watched:
        total += count_directories(watch.path, limit - total, recursive=watch.recursive)
        if total > limit:
            return Check(
                name,
                "fail",
                f"more directories under the watches than max_user_watches = {limit}: events there would be"
                ' missed; raise it (sysctl fs.inotify.max_user_watches=N) or use observer = "polling"',
            )
    detail = f"{total} director{'y' if total == 1 else 'ies'} to watch, max_user_watches = {limit}"
    if total > limit * WARN_SHARE:
        return Check(name, "warn", detail + " (shared by every process of this user): consider raising it")
    return Check(name, "ok", detail)


# ------------------------------------------------------------------------------------------ audit key


def audit_key_check(settings: Settings) -> Check:
    """Whether the audit log's K_0 is still on this host: whoever reads it can forge the log."""
    name = "audit key"
    path = k0_on_host(settings.state.dir)
    if path is not None:
        return Check(
            name,
            "fail",
            f"K_0 is still on this host ({path}): whoever can read it can forge the audit log and its"
            " anchor; store it offline and remove it: `dropwarden audit export-key`",
        )
    if current_key_path(settings.state.dir).exists():
        return Check(
            name, "ok", "K_0 is not on this host (`audit verify --key FILE` takes your offline copy)"
        )
    return Check(name, "ok", "no audit key yet (the daemon makes K_0 at its first start: then export it)")


# ------------------------------------------------------------------------------------------ plugins


def plugin_checks(plugins: Plugins, settings: Settings) -> Iterator[Check]:
    """A failed plugin load, then each plugin's `dropwarden_doctor_checks`; a plugin whose checks raise
    or yield something else gets one failing line and the others still run."""
    for error in plugins.errors:
        yield Check(f"plugin {error.name}", "fail", f"{error.stage} failed: {error.error}")
    impls = plugins.manager.hook.dropwarden_doctor_checks.get_hookimpls()
    for impl in sorted(impls, key=lambda i: i.plugin_name):
        offered, who = {"settings": settings}, f"plugin {impl.plugin_name}"
        try:
            for item in impl.function(**{arg: offered[arg] for arg in impl.argnames}) or ():
                if not isinstance(item, Check):
                    yield Check(who, "fail", f"a check is not a Check: {item!r:.100}")
                    break
                yield item
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            yield Check(
                who,
                "fail",
                f"its checks raised {type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})",
            )
