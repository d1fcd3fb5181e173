"""`dropwarden config check|show`: validate the configuration, or print the effective one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dropwarden.commands._app import EXIT_USAGE, app_context, config_option
from dropwarden.config import ConfigProblem, format_key
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
