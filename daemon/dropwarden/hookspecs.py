"""The plugin contract: every hook dropwarden calls, with its arguments and return value documented."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from dropwarden.config import Settings

PROJECT = "dropwarden"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def dropwarden_register_detectors(register: Callable[[Any], None], settings: Settings) -> None:
    """Register detectors.

    Args:
        register: call it once per detector object; the object implements
            `dropwarden.registry.Detector` (attributes `id`, `version`, `view_kinds`; method `detect`).
            A duplicate id or a non-conforming object raises; the plugin is then reported as broken.
        settings: the validated configuration (`dropwarden.config.Settings`), read-only. A plugin's
            own table is `settings.plugin_config(name)`.

    Returns:
        Nothing; only calls to `register` count.
    """


@hookspec
def dropwarden_register_extractors(register: Callable[[Any], None], settings: Settings) -> None:
    """Register extractors that derive views (text from documents, OCR text from images).

    Args:
        register: call it once per extractor object implementing `dropwarden.registry.Extractor`
            (attributes `id`, `version`; method `extract(snapshot, views)` returning new views).
        settings: the validated configuration, read-only.

    Returns:
        Nothing; only calls to `register` count.
    """


@hookspec
def dropwarden_register_actions(register: Callable[[Any], None], settings: Settings) -> None:
    """Register actions the daemon may take on a verdict (quarantine, alert sinks, release).

    Args:
        register: call it once per action object implementing `dropwarden.registry.Action`
            (attribute `id`; method `describe()`).
        settings: the validated configuration, read-only.

    Returns:
        Nothing; only calls to `register` count.
    """


@hookspec
def dropwarden_register_commands(cli: click.Group) -> None:
    """Add subcommands to the `dropwarden` command line.

    Args:
        cli: the root `click.Group`; add commands with `@cli.command()` or `cli.add_command(...)`.
            Called before the configuration is read, so commands load it themselves when invoked.

    Returns:
        Nothing.
    """
