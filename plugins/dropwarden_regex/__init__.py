"""Built-in regex PII/secret detector plugin: registers `RegexDetector` through the dropwarden hook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dropwarden.hookspecs import hookimpl
from dropwarden_regex.detector import VERSION, RegexDetector

if TYPE_CHECKING:
    from collections.abc import Callable

    from dropwarden.config import Settings

__version__ = VERSION
__all__ = ["RegexDetector", "__version__", "dropwarden_register_detectors"]


@hookimpl
def dropwarden_register_detectors(register: Callable[[Any], None], settings: Settings) -> None:
    """Register the regex detector built from `settings.rules` (packs, custom rules, allow-list)."""
    register(RegexDetector(settings.rules))
