"""Loading the configuration: TOML file + drop-ins + DROPWARDEN_* environment, validated in two passes
(the core's tables, then, once `[plugins]` chose the plugins, each plugin's table with its model)."""

from __future__ import annotations

import copy
import difflib
import os
import tomllib
from collections.abc import Iterable
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dropwarden import config
from dropwarden.config import (
    CORE_TABLES,
    ENV_NESTED,
    ENV_PREFIX,
    ConfigError,
    ConfigProblem,
    LoadedConfig,
    Settings,
    compose_settings,
    problem_of,
)
from dropwarden.plugins import Plugins, alert_sink_types, config_tables, declared_table_owners, load_plugins


def dropin_dir(config_path: Path) -> Path:
    return config_path.with_name(config_path.stem + ".d")


def load_config(
    path: Path | None = None,
    environ: dict[str, str] | None = None,
    *,
    entry_points_: Iterable[EntryPoint] | None = None,
) -> LoadedConfig:
    """The one way to read the configuration and load the plugins (every command, the service's start
    and reload): read the file (default path when None; a missing default means embedded defaults),
    its drop-ins (`<stem>.d/*.toml`, name order, deep merge) and environment overrides; validate the
    core's tables; load the plugins `[plugins]` allows; validate each other table with its owner's
    model and each alert sink with its type's. Raises ConfigError with every problem found.

    The result's settings carry the plugins (`settings.loaded_plugins`, also `LoadedConfig.plugins`),
    so that building the registry later uses the plugins that validated them. Strict plugin loading
    raises `dropwarden.plugins.PluginLoadError`."""
    environ = dict(os.environ if environ is None else environ)
    merged, origins, files = _read(path)
    origins.update(_env_origins(environ))

    core_only = {key: value for key, value in merged.items() if key in CORE_TABLES}
    first = compose_settings((), None)
    try:
        core = _build(first, core_only, environ)
    except ValidationError as exc:
        raise ConfigError([problem_of(err, origins, first) for err in exc.errors()]) from None

    plugins = load_plugins(core, entry_points_=entry_points_, environ=environ)
    tables = config_tables(plugins)
    sinks = alert_sink_types(plugins)
    problems = _unowned(merged, origins, tables, plugins) + _unknown_sinks(merged, origins, sinks)
    known = {key: value for key, value in merged.items() if key in CORE_TABLES or key in tables}
    known = _without_unknown_sinks(known, sinks)
    cls = compose_settings(
        tuple(sorted((name, model) for name, (_, model) in tables.items())),
        tuple(sorted((name, model) for name, (_, model) in sinks.items())),
    )
    try:
        settings = _build(cls, known, _env_of(environ, tables))
    except ValidationError as exc:
        problems += [problem_of(err, origins, cls) for err in exc.errors()]
    if problems:
        raise ConfigError(problems)
    settings._loaded_plugins = plugins
    return LoadedConfig(settings, tuple(files), origins, plugins)


def _read(path: Path | None) -> tuple[dict[str, Any], dict[tuple[str | int, ...], str], list[Path]]:
    explicit = path is not None
    path = Path(path) if path is not None else config.DEFAULT_CONFIG_PATH
    problems: list[ConfigProblem] = []
    merged: dict[str, Any] = {}
    origins: dict[tuple[str | int, ...], str] = {}
    files: list[Path] = []

    if path.exists():
        candidates = [path, *sorted(dropin_dir(path).glob("*.toml"))]
    elif explicit:
        raise ConfigError([ConfigProblem(str(path), "", "configuration file not found")])
    else:
        candidates = sorted(dropin_dir(path).glob("*.toml"))

    for candidate in candidates:
        try:
            with candidate.open("rb") as handle:
                data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            problems.append(ConfigProblem(str(candidate), "", f"TOML syntax error: {exc}"))
            continue
        except OSError as exc:
            problems.append(ConfigProblem(str(candidate), "", f"cannot read: {exc.strerror}"))
            continue
        files.append(candidate)
        _deep_merge(merged, data, str(candidate), (), origins)
    if problems:
        raise ConfigError(problems)
    return merged, origins, files


def _unowned(
    merged: dict[str, Any],
    origins: dict[tuple[str | int, ...], str],
    tables: dict[str, Any],
    plugins: Plugins,
) -> list[ConfigProblem]:
    """A table in a file that no loaded plugin owns: name its owner if known. (Environment variables
    naming no table are ignored, as pydantic-settings always did.)"""
    present = set(merged) - CORE_TABLES - set(tables)
    if not present:
        return []
    owners = declared_table_owners()
    why = {name: "not in the allow list" for name in plugins.skipped}
    why.update({error.name: f"it failed to load: {error.error}" for error in plugins.errors})
    problems = []
    for table in sorted(map(str, present)):
        owner = owners.get(table)
        if owner is not None:
            reason = why.get(owner, "not loaded")
            message = f"this table belongs to plugin {owner!r}, which is not loaded ({reason})"
        else:
            message = "unknown key: no loaded plugin owns this table"
            close = difflib.get_close_matches(table, [*CORE_TABLES, *tables], n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            elif why:
                message += "; not loaded: " + ", ".join(f"{n} ({r})" for n, r in sorted(why.items()))
        problems.append(ConfigProblem(config._source_of(origins, (table,)), table, message))
    return problems


def _sink_entries(merged: dict[str, Any]) -> list[Any]:
    alerts = merged.get("alerts")
    sinks = alerts.get("sink") if isinstance(alerts, dict) else None
    return sinks if isinstance(sinks, list) else []


def _unknown_sinks(
    merged: dict[str, Any], origins: dict[tuple[str | int, ...], str], sinks: dict[str, Any]
) -> list[ConfigProblem]:
    problems = []
    for index, entry in enumerate(_sink_entries(merged)):
        if not isinstance(entry, dict) or "type" not in entry or entry["type"] in sinks:
            continue  # pydantic reports a missing or malformed type
        loc = ("alerts", "sink", index, "type")
        known = ", ".join(repr(name) for name in sorted(sinks)) or "none"
        message = f"no loaded plugin provides alert sink type {entry['type']!r} (known: {known})"
        problems.append(ConfigProblem(config._source_of(origins, loc), config.format_key(loc), message))
    return problems


def _without_unknown_sinks(known: dict[str, Any], sinks: dict[str, Any]) -> dict[str, Any]:
    """Drop the sinks already reported as of an unknown type, so the rest are still checked."""
    entries = _sink_entries(known)
    kept = [e for e in entries if not (isinstance(e, dict) and "type" in e and e["type"] not in sinks)]
    if len(kept) == len(entries):
        return known
    known = copy.copy(known)
    known["alerts"] = {**known["alerts"], "sink": kept}
    return known


def _env_of(environ: dict[str, str], tables: dict[str, Any]) -> dict[str, str]:
    """Environment overrides of the tables validated now (an unowned one is reported already)."""
    wanted = CORE_TABLES | set(tables)
    return {
        name: value
        for name, value in environ.items()
        if not name.startswith(ENV_PREFIX) or name[len(ENV_PREFIX) :].split(ENV_NESTED)[0].lower() in wanted
    }


def _build(cls: type[Settings], merged: dict[str, Any], environ: dict[str, str]) -> Settings:
    saved = os.environ.copy()
    try:
        os.environ.clear()
        os.environ.update({k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)})
        return cls(**merged)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _deep_merge(
    into: dict[str, Any],
    new: dict[str, Any],
    source: str,
    prefix: tuple[str | int, ...],
    origins: dict[tuple[str | int, ...], str],
) -> None:
    """Tables merge recursively; arrays of tables append (a drop-in adds a rule); other values replace."""
    for key, value in new.items():
        loc = (*prefix, key)
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value, source, loc, origins)
        elif _is_table_array(value) and _is_table_array(into.get(key)):
            start = len(into[key])
            into[key].extend(value)
            for index, item in enumerate(value, start):
                _record_origins(item, source, (*loc, index), origins)
        else:
            into[key] = value
            _record_origins(value, source, loc, origins)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _record_origins(value: Any, source: str, loc: tuple[str | int, ...], origins: dict) -> None:
    origins[loc] = source
    if isinstance(value, dict):
        for key, sub in value.items():
            _record_origins(sub, source, (*loc, key), origins)
    elif _is_table_array(value):
        for index, sub in enumerate(value):
            _record_origins(sub, source, (*loc, index), origins)


def _env_origins(environ: dict[str, str]) -> dict[tuple[str | int, ...], str]:
    out: dict[tuple[str | int, ...], str] = {}
    for name in environ:
        if name.startswith(ENV_PREFIX) and name != "DROPWARDEN_LOAD_PLUGINS":
            loc = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_NESTED))
            out[loc] = f"environment {name}"
    return out
