"""What every subcommand shares: the lazily loaded configuration, the `--config` option, exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dropwarden.config import ConfigError, LoadedConfig
from dropwarden.configload import load_config
from dropwarden.plugins import PluginLoadError

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
            except PluginLoadError as exc:
                click.echo(f"plugin error (strict mode): {exc}", err=True)
                sys.exit(EXIT_USAGE)
        return self._loaded


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Configuration file (default /etc/dropwarden/dropwarden.toml, embedded defaults if absent).",
)


def app_context(ctx: click.Context, config_path: Path | None) -> AppContext:
    """The root context, with a subcommand's own `--config` taking precedence over the root one."""
    app: AppContext = ctx.find_root().obj
    if config_path is not None:
        app.config_path = config_path
    return app
