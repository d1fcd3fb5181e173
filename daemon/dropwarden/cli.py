"""The `dropwarden` command line: the root group, shared options, and plugin-provided commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dropwarden import __version__
from dropwarden.commands import audit, config, doctor, plugins, quarantine, run, scan, status
from dropwarden.commands._app import EXIT_USAGE, AppContext, app_context, config_option

__all__ = ["EXIT_USAGE", "AppContext", "app_context", "build_cli", "cli", "config_option", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.version_option(__version__, prog_name="dropwarden")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Judge every file that lands in a drop folder."""
    ctx.obj = AppContext(config_path)


def build_cli() -> click.Group:
    for command in (
        config.config,
        plugins.plugins,
        scan.scan,
        audit.audit,
        run.run,
        quarantine.quarantine,
        doctor.doctor,
        status.status,
    ):
        cli.add_command(command)
    return cli


def main(argv: list[str] | None = None) -> None:
    from dropwarden.plugins import load_plugins

    group = build_cli()
    try:
        loaded = load_plugins()
        loaded.manager.hook.dropwarden_register_commands(cli=group)
    except Exception as exc:  # strict mode, or a plugin whose command hook fails
        click.echo(f"dropwarden: plugin error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    group.main(args=argv, prog_name="dropwarden")
