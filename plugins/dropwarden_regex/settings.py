"""The regex plugin's settings: the `[rules]` table (packs, disabled rules, custom rules, allow-list)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from dropwarden.config import Settings, Strict, check_regex, check_severity


class CustomRule(Strict):
    """A rule written by the operator: a regex, the finding type it reports, and optional checks."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    type: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    pattern: str
    severity: str = "medium"
    confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    validator: str | None = None
    context: list[str] = []
    context_window: int = Field(default=64, ge=1, le=4096)
    ignore_case: bool = False

    _pattern = field_validator("pattern")(check_regex)
    _severity = field_validator("severity")(check_severity)


class AllowList(Strict):
    """Findings to drop: by value, by fingerprint (keeps secrets out of the config), regex, path glob."""

    values: list[str] = []
    fingerprints: list[str] = []
    patterns: list[str] = []
    paths: list[str] = []

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            check_regex(pattern)
        return patterns


class RulesSettings(Strict):
    """The `[rules]` table."""

    packs: list[Literal["pii", "secrets"]] = ["pii", "secrets"]
    disable: list[str] = []
    custom: list[CustomRule] = []
    allow: AllowList = AllowList()
    engine: Literal["auto", "hyperscan", "python"] = "auto"
    max_match_length: int = Field(default=512, ge=16, le=65536)


def rules_settings(settings: Settings) -> RulesSettings:
    """The `[rules]` table of these settings."""
    return settings.table("rules", RulesSettings)
