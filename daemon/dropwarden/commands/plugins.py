"""`dropwarden plugins`: installed plugins, what each registered, versions and load errors."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dropwarden.commands._app import app_context, config_option
from dropwarden.plugins import build_registry


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins(ctx: click.Context, config_path: Path | None, as_json: bool) -> None:
    """List plugins, their registrations, versions and load errors."""
    settings = app_context(ctx, config_path).config().settings
    loaded = settings.loaded_plugins
    registry = build_registry(loaded, settings)
    report = {
        "plugins": [
            {
                "name": info.name,
                "entry_point": info.entry_point,
                "distribution": info.distribution,
                "version": info.version,
                "registered": [
                    {"kind": r.kind[:-1], "id": r.id, "version": r.version}
                    for r in registry.by_plugin(info.name)
                ],
            }
            for info in loaded.plugins
        ],
        "skipped": loaded.skipped,
        "errors": [{"plugin": e.name, "stage": e.stage, "error": e.error} for e in loaded.errors],
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for plugin in report["plugins"]:
        click.echo(
            f"{plugin['name']} {plugin['version']} ({plugin['distribution']}: {plugin['entry_point']})"
        )
        for item in plugin["registered"]:
            click.echo(f"  {item['kind']:<9} {item['id']} {item['version']}")
    for name in report["skipped"]:
        click.echo(f"{name}: not loaded (not in the allow-list)")
    for error in report["errors"]:
        click.echo(f"{error['plugin']}: {error['stage']} failed: {error['error']}", err=True)
