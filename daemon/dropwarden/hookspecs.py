"""The plugin contract: every hook dropwarden calls, with its arguments and return value documented."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pluggy

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel

    from dropwarden.config import Settings, SinkSettings

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
def dropwarden_config_tables() -> Mapping[str, type[BaseModel]]:
    """Declare the top-level configuration tables this plugin owns, each with its pydantic model.

    Called once per configuration load (start, each reload, every command that reads the
    configuration), after the core tables were validated and the plugins chosen by `[plugins]` were
    loaded, before any registration hook. Each table present in the files or the environment
    (`DROPWARDEN_<TABLE>__<KEY>`) is validated with its model; problems are reported as
    `file: table.key: problem` like the core's, and `dropwarden config check` exits 2. A table no loaded
    plugin owns is an error; so is one whose owner is installed but not loaded (disallowed or broken):
    declare the table in your package's entry-point group `dropwarden.tables` too (name = the table,
    value = your plugin's module) so that error can name your plugin without importing it.

    Returns:
        `{table name: model class}`. A name the core owns (state, audit, limits, plugins, daemon,
        metrics, gpu, alerts, watch) or one already claimed by another plugin is refused (the plugin
        gets a "config" load error). Read the validated table with `settings.table(name, Model)`, which
        gives `Model()` when the table is absent. Models should forbid unknown keys
        (`dropwarden.config.Strict`).
    """


@hookspec
def dropwarden_alert_sink_types() -> Mapping[str, type[SinkSettings]]:
    """Declare the alert sink types (`[[alerts.sink]] type = "..."`) this plugin provides.

    Called with `dropwarden_config_tables`. Each `[[alerts.sink]]` entry is validated with the model of
    its `type`; an entry whose type no loaded plugin provides is an error naming the type.

    Returns:
        `{type value: model class}`; each model subclasses `dropwarden.config.SinkSettings` (fields
        `type: str`, `name: str | None`; property `id`, the sink's name in the outbox and in health
        reports) and should narrow `type` to `Literal["<its type>"]`. A type already provided by
        another plugin is refused (a "config" load error).
    """


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
            own table is `settings.table(name, Model)` (see `dropwarden_config_tables`);
            `settings.plugin_config(name)` is the older, untyped `[plugins.config.<name>]` path.

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
    """Register actions a watch may name in `on_finding` / `on_unscanned`.

    Called whenever the registry is built (start, each reload, `config check`, `plugins`), after the
    settings were validated. Every watch's action names are then checked: one no loaded plugin
    registers ("alert" and "leave" excepted) is a configuration error (exit 2, the daemon does not start
    and a reload is refused).

    Args:
        register: call it once per object implementing `dropwarden.registry.Action`: `id` (the name a
            watch uses; unique across plugins), `kind` ("notify" with `send(payload)`, optional
            `send_batch(payloads) -> [None | exception per payload]`, `close()` and
            `use_audit(append)`; or "move" with `move(request)`, core-only in practice) and
            `describe()`. See `Action` for the delivery contract (the durable outbox, at least once,
            retried with backoff while `send` raises).
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
