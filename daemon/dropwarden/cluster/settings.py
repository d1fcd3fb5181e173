"""`[cluster]`: which role this process plays and how it reaches Redis (no Redis import here)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_validator


class ClusterSettings(BaseModel):
    """Role "all" judges on this host as always; "watch" sends judging to Redis; "judge" serves it."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    role: Literal["all", "watch", "judge"] = "all"
    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password_file: Path | None = None  # the ACL user's password; never in the configuration itself
    ssl_ca_file: Path | None = None  # rediss://: the CA that signed the server's certificate
    ssl_cert_file: Path | None = None  # rediss://: a client certificate, when the server asks for one
    ssl_key_file: Path | None = None
    prefix: str = Field(default="dropwarden", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    node: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,64}$")  # a watcher's name; "": the host name
    blob_max_bytes: ByteSize = ByteSize(16 * 1024 * 1024)
    shared_dir: Path | None = None  # bigger blobs go here (shared by watchers and judges); None: unscanned
    blob_ttl: float = Field(default=3600.0, gt=0)
    verdict_ttl: float = Field(default=86400.0, gt=0)
    job_timeout: float = Field(default=300.0, gt=0)
    claim_idle: float = Field(default=60.0, gt=0)
    max_deliver: int = Field(default=3, ge=1)
    max_outstanding: int = Field(default=64, ge=1)
    # One fingerprint key for every host (hex, 0600, copied with the configuration); None: each host's own
    fingerprint_key_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError("expected a redis:// or rediss:// (TLS) URL")
        if "@" in value.split("//", 1)[1].split("/", 1)[0]:
            raise ValueError("put no user or password in the URL: use username and password_file")
        return value

    @field_validator(
        "password_file", "shared_dir", "ssl_ca_file", "ssl_cert_file", "ssl_key_file", "fingerprint_key_file"
    )
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value
