"""The plugin contract: every hook dropwarden calls, with its arguments and return value documented."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pluggy

if TYPE_CHECKING:
    import click

    from dropwarden.config import Settings

PROJECT = "dropwarden"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

CheckStatus = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One line of `dropwarden doctor`: what was checked, how it stands, and why, in one line.

    `status` is "ok", "warn" (worth a look; the daemon works) or "fail" (the daemon cannot do what its
    configuration asks; `doctor` then exits 1). `name` is short and stable ("vision endpoint",
    "watch inbox quarantine"); `detail` is one line for the operator.
    """

    name: str
    status: CheckStatus
    detail: str


@hookspec
def dropwarden_register_detectors(register: Callable[[Any], None], settings: Settings) -> None:
    """Register detectors.

    Args:
        register: call it once per detector object; the object implements
            `dropwarden.registry.Detector` (attributes `id`, `version`, `view_kinds`; method `detect`;
            optional `settings_digest()`: its effective settings as JSON, hashed into the ruleset
            version so that changing them re-judges files on the next reconcile). A duplicate id or a
            non-conforming object raises; the plugin is then reported as broken.
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
            (attributes `id`, `version`; method `extract(snapshot, views)` returning new views;
            optional `settings_digest()` as for detectors).
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


@hookspec
def dropwarden_doctor_checks(settings: Settings) -> Iterable[Check]:
    """Contribute checks to `dropwarden doctor` (the core adds its own: watches, inotify, state, audit,
    alert sinks, K_0).

    Called once per `dropwarden doctor` run, for each loaded plugin, after the configuration was read and
    validated and without building the registry: a check loads or contacts what it checks itself, and
    must not change anything the daemon owns.

    Args:
        settings: the validated configuration (`dropwarden.config.Settings`), read-only.

    Returns:
        An iterable of `dropwarden.hookspecs.Check`; a generator is best, since each check is printed as
        it is produced. A plugin whose checks raise, or yield anything but a `Check`, gets one "fail"
        line naming it; the other plugins' checks still run.
    """
