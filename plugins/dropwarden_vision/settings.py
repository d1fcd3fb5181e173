"""The vision plugin's settings: the `[vision]` table (backend, image limits, categories)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from dropwarden.config import Settings, Strict, check_severity


class VisionCategory(Strict):
    type: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    severity: str = "high"

    _severity = field_validator("severity")(check_severity)


_VISION_CATEGORIES = {
    name: VisionCategory(type=f"VISION_{name.upper()}", severity=severity)
    for name, severity in (
        ("id_document", "high"),
        ("payment_card", "high"),
        ("bank_document", "high"),
        ("medical", "high"),
        ("screenshot_with_personal_data", "medium"),
        ("handwriting_personal", "medium"),
        ("other", "low"),
    )
}


class VisionSettings(Strict):
    """The vision-language detector: an OpenAI-compatible endpoint or an embedded llama.cpp model."""

    enabled: bool = False
    backend: Literal["openai", "llama-cpp"] = "openai"
    # openai backend
    # one URL, or a list: an endpoint pool (least in flight first, a circuit breaker per endpoint)
    base_url: str | list[str] = "http://127.0.0.1:8080/v1"
    model: str = "llava"
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: Path | None = None
    response_format: Literal["auto", "json_schema", "json_object", "prompt"] = "auto"
    timeout: float = Field(default=25.0, gt=0)
    retries: int = Field(default=1, ge=0, le=10)
    max_in_flight: int = Field(default=4, ge=1)
    gate_resource: str = "vision-endpoint"
    # llama-cpp backend
    model_path: Path | None = None
    mmproj_path: Path | None = None
    chat_handler: str = "llava-1-5"
    n_gpu_layers: int = 0
    n_ctx: int = Field(default=4096, ge=512)
    n_threads: int | None = None
    gpu_resource: str = "gpu0"
    # images and answers
    max_side: int = Field(default=672, ge=32, le=8192)
    max_pixels: int = Field(default=50_000_000, ge=1)
    max_frames: int = Field(default=1, ge=1)
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    prompt: str | None = None
    categories: dict[str, VisionCategory] = _VISION_CATEGORIES
    circuit_failures: int = Field(default=5, ge=1)
    circuit_open_seconds: float = Field(default=30.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | list[str]) -> str | list[str]:
        urls = [value] if isinstance(value, str) else value
        if not urls:
            raise ValueError("expected a URL or a non-empty list of URLs")
        seen: set[str] = set()
        for number, url in enumerate(urls, 1):
            if not url.strip():
                raise ValueError(f"URL {number} is empty")
            if url.rstrip("/") in seen:  # the URL itself is not shown: it may hold a password
                raise ValueError(f"URL {number} is listed twice")
            seen.add(url.rstrip("/"))
        return value

    @property
    def base_urls(self) -> list[str]:
        """Every endpoint, in the configured order (one for a plain string)."""
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)


def vision_settings(settings: Settings) -> VisionSettings:
    """The `[vision]` table of these settings."""
    return settings.table("vision", VisionSettings)
