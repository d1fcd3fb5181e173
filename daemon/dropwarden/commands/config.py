"""`dropwarden config check|show|init`: validate the configuration, print the effective one, or write one."""

from __future__ import annotations

import json
import os
import sys
from importlib import resources
from pathlib import Path

import click

from dropwarden.commands._app import EXIT_USAGE, app_context, config_option
from dropwarden.config import DEFAULT_CONFIG_PATH, ConfigProblem, format_key
from dropwarden.plugins import PluginLoadError, build_registry
from dropwarden.registry import unknown_actions


@click.group()
def config() -> None:
    """Inspect the configuration."""


@config.command()
@config_option
@click.pass_context
def check(ctx: click.Context, config_path: Path | None) -> None:
    """Exit 0 when the configuration is valid; else exit 2 with one line per problem.

    Plugins validate the parts of the configuration they own while registering; their complaints
    count as configuration problems. A plugin that fails to import is a warning (it is skipped at
    run time too) unless strict plugin loading is on.
    """
    loaded = app_context(ctx, config_path).config()
    try:
        plugins = loaded.plugins
        registry = build_registry(plugins, loaded.settings)
    except PluginLoadError as exc:
        click.echo(f"plugin error (strict mode): {exc}", err=True)
        sys.exit(EXIT_USAGE)
    problems: list[str] = []
    for error in plugins.errors:
        if error.stage == "config":
            problems.append(f"plugin {error.name}: {error.error}")
        elif error.setting is not None:
            loc = error.setting.loc
            problems.append(str(ConfigProblem(loaded.source_of(loc), format_key(loc), error.setting.message)))
        elif error.stage == "register":
            problems.append(f"plugin {error.name}: registration failed: {error.error}")
        else:
            click.echo(f"warning: plugin {error}", err=True)
    for loc, why in unknown_actions(loaded.settings, registry):
        problems.append(str(ConfigProblem(loaded.source_of(loc), format_key(loc), why)))
    for line in problems:
        click.echo(line, err=True)
    for watch in loaded.settings.watch:
        for detector_id in watch.require:
            if detector_id not in registry.detectors:
                # Not an error: the daemon runs, holding every file of that kind as unscanned.
                click.echo(
                    f"warning: watch {watch.id}: required detector {detector_id!r} is not loaded;"
                    " every file of its kind there is unscanned (required_detector_missing)",
                    err=True,
                )
    if problems:
        sys.exit(EXIT_USAGE)
    files = ", ".join(map(str, loaded.files)) or "embedded defaults"
    click.echo(f"configuration OK ({files})")


@config.command()
@config_option
@click.pass_context
def show(ctx: click.Context, config_path: Path | None) -> None:
    """Print the effective configuration (files, drop-ins and environment merged) as JSON."""
    loaded = app_context(ctx, config_path).config()
    click.echo(json.dumps(loaded.settings.model_dump(mode="json"), indent=2, sort_keys=True))


def reference_text() -> str:
    """The reference configuration shipped with the package: every setting, at its embedded default."""
    return resources.files("dropwarden").joinpath("data/dropwarden.toml").read_text(encoding="utf-8")


def _watch_table(inbox: Path, release_to: Path | None, quarantine_dir: Path | None) -> str:
    lines = ["", "[[watch]]", f"path = {json.dumps(str(inbox))}"]
    if release_to is not None:
        lines.append(f"release_to = {json.dumps(str(release_to))}")
    if quarantine_dir is not None:
        lines.append(f"quarantine_dir = {json.dumps(str(quarantine_dir))}")
    return "\n".join(lines) + "\n"


@config.command()
@click.option(
    "--path",
    "target",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONFIG_PATH,
    show_default=True,
    help="Where to write the configuration.",
)
@click.option("--watch", "inbox", type=click.Path(path_type=Path), help="Add a [[watch]] for this folder.")
@click.option("--release-to", type=click.Path(path_type=Path), help="The watch's folder for clean files.")
@click.option("--quarantine-dir", type=click.Path(path_type=Path), help="The watch's quarantine (0700).")
@click.option("--force", is_flag=True, help="Replace an existing file.")
def init(
    target: Path, inbox: Path | None, release_to: Path | None, quarantine_dir: Path | None, force: bool
) -> None:
    """Write the reference configuration (every setting, commented), with a first watch if given.

    The file is written whole or not at all, and an existing one is kept unless --force.
    """
    if inbox is None and (release_to is not None or quarantine_dir is not None):
        raise click.UsageError("--release-to and --quarantine-dir belong to a --watch")
    text = reference_text()
    if inbox is not None:
        text += _watch_table(
            inbox.absolute(),
            release_to and release_to.absolute(),
            quarantine_dir and quarantine_dir.absolute(),
        )
    if target.exists() and not force:
        click.echo(f"{target} exists; keeping it (--force replaces it)", err=True)
        sys.exit(EXIT_USAGE)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    click.echo(f"wrote {target}" + ("" if inbox else "; add a [[watch]] before starting the daemon"))
