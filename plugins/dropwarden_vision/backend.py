"""Choosing the vision backend `[vision] backend` names; the shared interface is in `backend_types`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dropwarden.config import SettingError
from dropwarden_vision.backend_types import (
    MAX_TOKENS,
    BackendError,
    GateBusy,
    VisionBackend,
    chat_messages,
    plugin_options,
    safe_text,
)
from dropwarden_vision.settings import vision_settings

if TYPE_CHECKING:
    from dropwarden.config import Settings
    from dropwarden_vision.schema import VerdictSpec

__all__ = [
    "MAX_TOKENS",
    "BackendError",
    "GateBusy",
    "VisionBackend",
    "chat_messages",
    "create_backend",
    "plugin_options",
    "safe_text",
]


def create_backend(settings: Settings, spec: VerdictSpec) -> VisionBackend:
    """The backend `[vision] backend` names (openai with a list of base URLs: an `EndpointPool`). A
    llama-cpp backend without its extra installed is a SettingError naming `vision.backend`."""
    if vision_settings(settings).backend == "llama-cpp":
        try:
            from dropwarden_vision.llamacpp import LlamaCppBackend
        except ImportError as exc:
            raise SettingError(
                ("vision", "backend"),
                "the llama-cpp backend needs the `llamacpp` extra: pip install 'dropwarden[llamacpp]'"
                f" ({type(exc).__name__}: {exc})",
            ) from None
        return LlamaCppBackend(settings, spec)
    if not isinstance(vision_settings(settings).base_url, str):
        from dropwarden_vision.pool import EndpointPool

        return EndpointPool(settings, spec)
    from dropwarden_vision.openai_backend import OpenAIBackend

    return OpenAIBackend(settings, spec)
