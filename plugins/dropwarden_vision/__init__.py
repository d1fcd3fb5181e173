"""Built-in vision plugin: registers `VisionDetector` (when `[vision] enabled`) and its doctor checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dropwarden.config import SettingError
from dropwarden.hookspecs import hookimpl
from dropwarden_vision.detector import VERSION, VisionDetector
from dropwarden_vision.settings import VisionSettings, vision_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from pydantic import BaseModel

    from dropwarden.config import Settings
    from dropwarden.hookspecs import Check

__version__ = VERSION
__all__ = [
    "VisionDetector",
    "__version__",
    "dropwarden_config_tables",
    "dropwarden_doctor_checks",
    "dropwarden_register_detectors",
]


@hookimpl
def dropwarden_config_tables() -> Mapping[str, type[BaseModel]]:
    """The vision plugin owns `[vision]`."""
    return {"vision": VisionSettings}


@hookimpl
def dropwarden_register_detectors(register: Callable[[Any], None], settings: Settings) -> None:
    """Register the vision detector when `[vision] enabled`; nothing otherwise."""
    vision = vision_settings(settings)
    if not vision.enabled:
        return
    resources = settings.gpu.resources
    if vision.backend == "openai" and vision.gate_resource and vision.gate_resource not in resources:
        raise SettingError(
            ("vision", "gate_resource"),
            f"no GPU gate resource {vision.gate_resource!r} in [gpu] resources (have: {sorted(resources)});"
            ' add it there or set gate_resource = "" for no gate',
        )
    register(VisionDetector(settings))


@hookimpl
def dropwarden_doctor_checks(settings: Settings) -> Iterator[Check]:
    """`dropwarden doctor`: the configured backend end to end (endpoint, model, response format, an image)."""
    from dropwarden_vision.doctor import run_checks

    yield from run_checks(settings)
