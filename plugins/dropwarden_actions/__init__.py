"""Built-in actions plugin: quarantine, release and the alert sinks, registered as any plugin's are."""

from __future__ import annotations

from collections.abc import Mapping

from dropwarden.config import SinkSettings
from dropwarden.hookspecs import hookimpl
from dropwarden_actions.settings import JsonlSinkSettings

__version__ = "0.1.0"


@hookimpl
def dropwarden_alert_sink_types() -> Mapping[str, type[SinkSettings]]:
    """The alert sink types this plugin provides: `jsonl`."""
    return {"jsonl": JsonlSinkSettings}
