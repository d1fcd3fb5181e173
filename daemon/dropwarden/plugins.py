"""Plugin loading: entry points of group `dropwarden`, each isolated, filtered by an allow-list."""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy
from pydantic import BaseModel

from dropwarden import hookspecs
from dropwarden.config import CORE_TABLES, SettingError, Settings, SinkSettings
from dropwarden.registry import Registry

ENTRY_POINT_GROUP = "dropwarden"
# Declares, without importing anything, which plugin owns a table: name = the table, value = the
# plugin's module (as in its `dropwarden` entry point). Used only to name an owner that is not loaded.
TABLES_ENTRY_POINT_GROUP = "dropwarden.tables"
ALLOW_ENV = "DROPWARDEN_LOAD_PLUGINS"
STRICT_ENV = "DROPWARDEN_STRICT_PLUGINS"


class PluginLoadError(Exception):
    """Raised in strict mode when any plugin fails to load or register."""


@dataclass
class PluginInfo:
    name: str
    entry_point: str
    distribution: str
    version: str


@dataclass
class LoadError:
    name: str
    stage: str  # "import", "register", "check", "config"
    error: str
    detail: str = ""
    setting: SettingError | None = None

    def __str__(self) -> str:
        return f"{self.name}: {self.stage} failed: {self.error}"


@dataclass
class Plugins:
    """The loaded plugin manager, what each plugin is, and what went wrong on the way."""

    manager: pluggy.PluginManager
    plugins: list[PluginInfo] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    strict: bool = False


def allow_list(settings: Settings | None, environ: dict[str, str] | None = None) -> set[str] | None:
    """The environment variable wins over `[plugins] allow`; None means every installed plugin."""
    environ = os.environ if environ is None else environ
    raw = environ.get(ALLOW_ENV)
    if raw is not None:
        return {name.strip() for name in raw.split(",") if name.strip()}
    if settings is not None and settings.plugins.allow is not None:
        return set(settings.plugins.allow)
    return None


def is_strict(settings: Settings | None, environ: dict[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    if environ.get(STRICT_ENV, "").lower() in ("1", "true", "yes"):
        return True
    return bool(settings and settings.plugins.strict)


def load_plugins(
    settings: Settings | None = None,
    *,
    entry_points_: Iterable[EntryPoint] | None = None,
    environ: dict[str, str] | None = None,
) -> Plugins:
    """Import every allowed entry point in its own try/except; a broken one is recorded and skipped
    (strict mode raises PluginLoadError instead). No hook is called here."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    allowed = allow_list(settings, environ)
    strict = is_strict(settings, environ)
    result = Plugins(manager, strict=strict)
    candidates = entry_points(group=ENTRY_POINT_GROUP) if entry_points_ is None else entry_points_
    for ep in sorted(candidates, key=lambda e: e.name):
        if allowed is not None and ep.name not in allowed:
            result.skipped.append(ep.name)
            continue
        dist = getattr(ep, "dist", None)
        info = PluginInfo(ep.name, ep.value, dist.name if dist else "?", dist.version if dist else "?")
        try:
            module = ep.load()
            manager.register(module, name=ep.name)
        except Exception as exc:
            _fail(result, strict, LoadError(ep.name, "import", _describe(exc), traceback.format_exc()))
            continue
        result.plugins.append(info)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        _fail(result, strict, LoadError(getattr(exc, "plugin_name", "?"), "check", str(exc)))
    return result


def config_tables(plugins: Plugins) -> dict[str, tuple[str, type[BaseModel]]]:
    """`table -> (plugin, model)` from each loaded plugin's `dropwarden_config_tables`; a plugin whose
    answer is unusable (raises, claims a core table or one already claimed, not a model) is recorded
    as a "config" error and owns nothing."""
    owned: dict[str, tuple[str, type[BaseModel]]] = {}
    for name, answer in _each_answer(plugins, plugins.manager.hook.dropwarden_config_tables):
        for table, model in answer.items():
            if table in CORE_TABLES or table in owned:
                owner = "the core" if table in CORE_TABLES else f"plugin {owned[table][0]}"
                problem = f"table [{table}] is already owned by {owner}"
            elif not (isinstance(model, type) and issubclass(model, BaseModel)):
                problem = f"table [{table}]: {model!r} is not a pydantic model"
            else:
                owned[table] = (name, model)
                continue
            _fail(plugins, plugins.strict, LoadError(name, "config", problem))
    return owned


def alert_sink_types(plugins: Plugins) -> dict[str, tuple[str, type[SinkSettings]]]:
    """`type -> (plugin, model)` from each loaded plugin's `dropwarden_alert_sink_types`, checked as
    `config_tables` checks tables (each model must subclass `dropwarden.config.SinkSettings`)."""
    provided: dict[str, tuple[str, type[SinkSettings]]] = {}
    for name, answer in _each_answer(plugins, plugins.manager.hook.dropwarden_alert_sink_types):
        for sink_type, model in answer.items():
            if sink_type in provided:
                problem = f"alert sink type {sink_type!r} is already provided by {provided[sink_type][0]}"
            elif not (isinstance(model, type) and issubclass(model, SinkSettings)):
                problem = f"alert sink type {sink_type!r}: {model!r} does not subclass SinkSettings"
            else:
                provided[sink_type] = (name, model)
                continue
            _fail(plugins, plugins.strict, LoadError(name, "config", problem))
    return provided


def _each_answer(plugins: Plugins, hook: Any) -> Iterable[tuple[str, dict[str, Any]]]:
    for impl in sorted(hook.get_hookimpls(), key=lambda impl: impl.plugin_name):
        try:
            answer = dict(impl.function())
        except Exception as exc:
            error = LoadError(impl.plugin_name, "config", _describe(exc), traceback.format_exc())
            _fail(plugins, plugins.strict, error)
            continue
        yield impl.plugin_name, answer


def declared_table_owners() -> dict[str, str]:
    """`table -> plugin name` from installed metadata alone (group `dropwarden.tables`), importing
    nothing: how an error names the owner of a table whose plugin is not loaded."""
    plugin_of_module = {ep.value.split(":")[0]: ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {
        ep.name: plugin_of_module.get(ep.value.split(":")[0], ep.value)
        for ep in entry_points(group=TABLES_ENTRY_POINT_GROUP)
    }


def plugins_for(settings: Settings) -> Plugins:
    """The plugins these settings were loaded with; loaded now for settings built in code."""
    loaded = settings.loaded_plugins
    return loaded if loaded is not None else load_plugins(settings)


def build_registry(plugins: Plugins, settings: Settings) -> Registry:
    """Call each plugin's registration hooks separately, so a failure is attributed and isolated."""
    registry = Registry()
    strict = is_strict(settings)
    hooks = {
        "detectors": plugins.manager.hook.dropwarden_register_detectors,
        "extractors": plugins.manager.hook.dropwarden_register_extractors,
        "actions": plugins.manager.hook.dropwarden_register_actions,
    }
    broken: set[str] = set()
    for kind, hook in hooks.items():
        for impl in hook.get_hookimpls():
            name = impl.plugin_name
            if name in broken:
                continue

            def register(obj: Any, _kind: str = kind, _name: str = name) -> None:
                registry.add(_kind, _name, obj)

            offered = {"register": register, "settings": settings}
            try:
                impl.function(**{arg: offered[arg] for arg in impl.argnames})
            except Exception as exc:
                broken.add(name)
                setting = exc if isinstance(exc, SettingError) else None
                error = LoadError(name, "register", _describe(exc), traceback.format_exc(), setting)
                _fail(plugins, strict, error)
                _drop(registry, name)
    return registry


def _drop(registry: Registry, plugin: str) -> None:
    """Remove everything a plugin registered before failing: half a plugin is worse than none."""
    for registration in registry.by_plugin(plugin):
        getattr(registry, registration.kind).pop(registration.id, None)
    registry.registrations = [r for r in registry.registrations if r.plugin != plugin]


def _fail(plugins: Plugins, strict: bool, error: LoadError) -> None:
    plugins.errors.append(error)
    if strict:
        raise PluginLoadError(str(error))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
