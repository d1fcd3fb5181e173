"""The actions plugin's settings: the models of the alert sink types it provides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from dropwarden.config import SinkSettings


class JsonlSinkSettings(SinkSettings):
    """`type = "jsonl"`: appends one ECS-shaped JSON object per line to `path`."""

    type: Literal["jsonl"]
    path: Path

    @property
    def id(self) -> str:
        return self.name or f"{self.type}:{self.path}"


class ExecSinkSettings(SinkSettings):
    """`type = "exec"`: runs `argv` (never through a shell; `argv[0]` an absolute path) for each alert,
    the alert as JSON on stdin; killed (its whole process group) after `timeout` seconds; at most
    `max_concurrent` at once. A non-zero exit, a timeout or a failure to start is retried like any
    failing sink."""

    type: Literal["exec"]
    argv: list[str] = Field(min_length=1)
    timeout: float = Field(default=30.0, gt=0, le=3600)
    max_concurrent: int = Field(default=1, ge=1, le=64)

    @field_validator("argv")
    @classmethod
    def _program_by_absolute_path(cls, argv: list[str]) -> list[str]:
        if not os.path.isabs(argv[0]):
            raise ValueError("argv[0] must be the program's absolute path (no shell, no PATH search)")
        if any("\0" in arg for arg in argv):
            raise ValueError("an argument holds a NUL byte")
        return argv

    @property
    def id(self) -> str:
        return self.name or f"exec:{self.argv[0]}"


class WebhookSinkSettings(SinkSettings):
    """`type = "webhook"`: POSTs alerts to `url` as `format` (HEC and `_bulk` in batches); the token
    (`Authorization: Splunk` for HEC, `Bearer` otherwise) and the HMAC key are read from files at start
    and reload, never written in the configuration. TLS is verified (against `ca_file` when given, the
    system's CAs otherwise)."""

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://[^\s/@]+(/\S*)?$")  # no user:password@ in it
    format: Literal["ecs", "ocsf", "splunk-hec", "elastic-bulk"] = "ecs"
    token_file: Path | None = None
    secret_file: Path | None = None  # HMAC-SHA256 over the body: X-Dropwarden-Signature: sha256=<hex>
    ca_file: Path | None = None
    timeout: float = Field(default=10.0, gt=0, le=300)
    index: str | None = None  # elastic-bulk: the index (default "dropwarden-alerts"); splunk-hec: optional
    sourcetype: str = "dropwarden:alert"  # splunk-hec
    batch_size: int = Field(default=100, ge=1, le=10000)  # splunk-hec, elastic-bulk: alerts per request
    batch_bytes: int = Field(default=1_048_576, ge=1024, le=100 * 1_048_576)  # and bytes per request
    ack: bool = False  # splunk-hec: wait for indexer acknowledgement of each request (its ackId)
    ack_timeout: float = Field(default=30.0, gt=0, le=600)  # splunk-hec: unacknowledged after it: retried

    @property
    def id(self) -> str:
        return self.name or f"webhook:{self.url}"


class JournaldSinkSettings(SinkSettings):
    """`type = "journald"`: one structured journal entry per alert (MESSAGE_ID, PRIORITY, DROPWARDEN_*)
    written to journald's native socket."""

    type: Literal["journald"]
    socket: Path = Path("/run/systemd/journal/socket")
