"""The `syslog` alert sink's settings: where (address, transport), in what format, with which TLS files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator

from dropwarden.config import SinkSettings


class SyslogSinkSettings(SinkSettings):
    """`type = "syslog"`: one RFC 5424 message per alert to `address` ("host:port", "[v6]:port") over
    `transport` ("udp"; "tcp", RFC 6587 octet counting; "tls", RFC 5425, the certificate verified against
    `ca_file` or the system's CAs and the host name checked), MSG in `format` ("ecs", "cef", "ocsf");
    `client_cert`/`client_key` for mutual TLS."""

    type: Literal["syslog"]
    address: str
    transport: Literal["udp", "tcp", "tls"] = "tls"
    format: Literal["ecs", "cef", "ocsf"] = "ecs"
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SyslogSinkSettings:
        self.endpoint()
        if self.transport != "tls" and (self.ca_file or self.client_cert or self.client_key):
            raise ValueError('ca_file, client_cert and client_key are for transport = "tls" only')
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert")
        return self

    def endpoint(self) -> tuple[str, int]:
        """(host, port) of `address`."""
        host, sep, port = self.address.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if (
            not sep
            or not host
            or not port.isdigit()
            or not 0 < int(port) < 65536
            or any(c.isspace() for c in host)
        ):
            raise ValueError(f"address {self.address!r} is not host:port")
        return host, int(port)

    @property
    def id(self) -> str:
        return self.name or f"syslog:{self.address}"
