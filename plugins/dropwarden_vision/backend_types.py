"""What every vision backend shares: the interface, its errors, chat messages, option parsing, safe text."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dropwarden.config import SettingError
from dropwarden_vision.schema import MalformedAnswer

if TYPE_CHECKING:
    from dropwarden.config import Settings
    from dropwarden_vision.images import PreparedImage
    from dropwarden_vision.schema import Answer

MAX_TOKENS = 300
_PLUGIN_KEYS = {"image_marker", "image_format"}


class BackendError(Exception):
    """The backend gave no answer (timeout, refused connection, HTTP error, rate limit, dead model).

    Counts as a failure of the endpoint for the circuit breaker, as does `schema.MalformedAnswer`.
    The message is safe for the audit log: no API key, no image content, no model free text.
    """


class GateBusy(Exception):
    """No GPU gate slot within the timeout, or the gate is unusable: a local condition, which does not
    count against the endpoint."""


@runtime_checkable
class VisionBackend(Protocol):
    """Judges one prepared image. Implementations:

    - `name`: short text for logs and `dropwarden doctor` ("openai http://host:8080/v1 model llava").
    - `judge(image)`: blocking; returns an `Answer` (parse the model's text with `spec.parse`), raises
      `BackendError` when no answer came, `MalformedAnswer` when the answer is unusable, `GateBusy`
      when the GPU gate gave no slot in time. It must return or raise within a bounded time (its own
      timeout), and may be called from several threads at once.
    - `close()`: release threads, connections, models; idempotent.

    Constructor convention (what `create_backend` calls): `Backend(settings: Settings, spec: VerdictSpec)`,
    raising `dropwarden.config.SettingError` for configuration it cannot use.
    """

    name: str

    def judge(self, image: PreparedImage) -> Answer: ...

    def close(self) -> None: ...


def plugin_options(settings: Settings) -> dict[str, Any]:
    """`[plugins.config.vision]`: `image_marker` (text put before the prompt, e.g. "<image>\\n" for
    mistral.rs with LLaVA; default none) and `image_format` ("png", default, or "jpeg")."""
    raw = settings.plugin_config("vision")
    for key in raw:
        if key not in _PLUGIN_KEYS:
            raise SettingError(
                ("plugins", "config", "vision", key), f"unknown key (known: {sorted(_PLUGIN_KEYS)})"
            )
    marker = raw.get("image_marker", "")
    if not isinstance(marker, str) or len(marker) > 64:
        raise SettingError(("plugins", "config", "vision", "image_marker"), "expected a short string")
    image_format = raw.get("image_format", "png")
    if image_format not in ("png", "jpeg"):
        raise SettingError(("plugins", "config", "vision", "image_format"), 'expected "png" or "jpeg"')
    return {"image_marker": marker, "image_format": image_format}


def chat_messages(image: PreparedImage, prompt: str, image_marker: str = "") -> list[dict[str, Any]]:
    """OpenAI-style messages: the image as a data URL, then the prompt (after `image_marker`, if any).

    The same shape works for llama-cpp-python's `create_chat_completion` (its LLaVA handlers place the
    image before the text whatever the order; a literal "<image>" in the text is plain text to them).
    """
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image.data_url}},
                {"type": "text", "text": image_marker + prompt},
            ],
        }
    ]


def safe_text(text: str, secrets: tuple[str, ...] = (), limit: int = 200) -> str:
    """One line, at most `limit` characters, with every secret (API key) replaced: for error messages
    built from what a server said (a hostile server may echo the key back)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def endpoint_failure(exc: Exception) -> bool:
    """What counts against the backend for the circuit breaker: no answer, or an unusable one."""
    return isinstance(exc, BackendError | MalformedAnswer)
