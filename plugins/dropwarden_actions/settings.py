"""The actions plugin's settings: the models of the alert sink types it provides."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dropwarden.config import SinkSettings


class JsonlSinkSettings(SinkSettings):
    """`type = "jsonl"`: appends one ECS-shaped JSON object per line to `path`."""

    type: Literal["jsonl"]
    path: Path

    @property
    def id(self) -> str:
        return self.name or f"{self.type}:{self.path}"
