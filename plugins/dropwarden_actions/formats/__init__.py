"""Alert formats a SIEM parses (ECS JSON, CEF, OCSF), each built only from the masked alert payload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dropwarden_actions.formats.cef import cef_line
from dropwarden_actions.formats.ecs import ecs_json
from dropwarden_actions.formats.ocsf import ocsf_json

# Format name -> the one-line text of an alert payload (no raw newline or control character in it).
FORMATS: dict[str, Callable[[dict[str, Any]], str]] = {"ecs": ecs_json, "cef": cef_line, "ocsf": ocsf_json}


def render(format_name: str, payload: dict[str, Any]) -> str:
    """The payload in `format_name` ("ecs", "cef" or "ocsf")."""
    return FORMATS[format_name](payload)
