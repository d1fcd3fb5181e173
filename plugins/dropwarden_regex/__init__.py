"""Built-in regex PII/secret detector plugin: registers `RegexDetector` through the dropwarden hook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dropwarden.hookspecs import hookimpl
from dropwarden_regex.detector import VERSION, RegexDetector
from dropwarden_regex.settings import RulesSettings, rules_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pydantic import BaseModel

    from dropwarden.config import Settings

__version__ = VERSION
__all__ = ["RegexDetector", "__version__", "dropwarden_config_tables", "dropwarden_register_detectors"]


@hookimpl
def dropwarden_config_tables() -> Mapping[str, type[BaseModel]]:
    """The regex plugin owns `[rules]`."""
    return {"rules": RulesSettings}


@hookimpl
def dropwarden_register_detectors(register: Callable[[Any], None], settings: Settings) -> None:
    """Register the regex detector built from `[rules]` (packs, custom rules, allow-list)."""
    register(RegexDetector(rules_settings(settings)))
