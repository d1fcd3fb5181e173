"""Built-in actions plugin: quarantine, release and the alert sinks, registered as any plugin's are."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dropwarden.config import Settings, SinkSettings
from dropwarden.hookspecs import hookimpl
from dropwarden_actions.execsink import ExecSink
from dropwarden_actions.moves import QuarantineAction, ReleaseAction
from dropwarden_actions.settings import ExecSinkSettings, JsonlSinkSettings
from dropwarden_actions.sinks import JsonlSink

__version__ = "0.1.0"


@hookimpl
def dropwarden_alert_sink_types() -> Mapping[str, type[SinkSettings]]:
    """The alert sink types this plugin provides: `jsonl` and `exec`."""
    return {"jsonl": JsonlSinkSettings, "exec": ExecSinkSettings}


@hookimpl
def dropwarden_register_actions(register: Callable[[Any], None], settings: Settings) -> None:
    """Register the move actions "quarantine" and "release", and one notify action per configured
    `[[alerts.sink]]` of a type this plugin provides (its id is the sink's id)."""
    register(QuarantineAction())
    register(ReleaseAction())
    for sink in settings.alerts.sink:
        if isinstance(sink, JsonlSinkSettings):
            register(JsonlSink(sink.id, sink.path))
        elif isinstance(sink, ExecSinkSettings):
            register(ExecSink(sink))
