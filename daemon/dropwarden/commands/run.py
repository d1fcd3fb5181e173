"""`dropwarden run`: the daemon in the foreground until SIGTERM/SIGINT; SIGHUP reloads."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from dropwarden.commands._app import EXIT_USAGE, app_context, config_option


@click.command()
@config_option
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
@click.option(
    "--log-format", type=click.Choice(["auto", "json", "console"]), default="auto", show_default=True
)
@click.pass_context
def run(ctx: click.Context, config_path: Path | None, log_level: str, log_format: str) -> None:
    """Watch the configured folders and judge every file that lands in them."""
    from dropwarden.audit import AuditError
    from dropwarden.config import ConfigError
    from dropwarden.logs import configure
    from dropwarden.plugins import PluginLoadError
    from dropwarden.service import Daemon, StartupError

    app = app_context(ctx, config_path)
    loaded = app.config()
    configure(log_level, None if log_format == "auto" else log_format == "json")
    daemon: Any = Daemon(loaded, app.config_path)
    if loaded.settings.cluster.role == "judge":  # no watches: judges the jobs of the cluster's watchers
        try:
            from dropwarden.cluster.judgeservice import JudgeService
        except ImportError as exc:
            click.echo(f"dropwarden: cannot start: [cluster] role judge needs redis-py: {exc}", err=True)
            sys.exit(1)
        daemon = JudgeService(loaded)
    try:
        code = daemon.run()
    except ConfigError as exc:  # found only once the plugins are loaded (an action no plugin registers)
        for problem in exc.problems:
            click.echo(f"dropwarden: cannot start: {problem}", err=True)
        sys.exit(EXIT_USAGE)
    except (StartupError, AuditError, PluginLoadError) as exc:
        click.echo(f"dropwarden: cannot start: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)
