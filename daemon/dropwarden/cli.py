"""The `dropwarden` command line: the root group, shared options, and plugin-provided commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dropwarden import __version__
from dropwarden.config import ConfigError, LoadedConfig, load_config

EXIT_USAGE = 2


class AppContext:
    """Lazily loaded configuration shared by subcommands (`--config` is a root option)."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._loaded: LoadedConfig | None = None

    def config(self) -> LoadedConfig:
        """The loaded configuration; on error prints one line per problem and exits 2."""
        if self._loaded is None:
            try:
                self._loaded = load_config(self.config_path)
            except ConfigError as exc:
                for problem in exc.problems:
                    click.echo(str(problem), err=True)
                sys.exit(EXIT_USAGE)
        return self._loaded


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Configuration file (default /etc/dropwarden/dropwarden.toml, embedded defaults if absent).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.version_option(__version__, prog_name="dropwarden")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Judge every file that lands in a drop folder."""
    ctx.obj = AppContext(config_path)


def app_context(ctx: click.Context, config_path: Path | None) -> AppContext:
    """The root context, with a subcommand's own `--config` taking precedence over the root one."""
    app: AppContext = ctx.find_root().obj
    if config_path is not None:
        app.config_path = config_path
    return app


def build_cli() -> click.Group:
    from dropwarden.commands import audit, config, doctor, plugins, quarantine, run, scan

    for command in (
        config.config,
        plugins.plugins,
        scan.scan,
        audit.audit,
        run.run,
        quarantine.quarantine,
        doctor.doctor,
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
