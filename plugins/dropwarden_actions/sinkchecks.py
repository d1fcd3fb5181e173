"""`dropwarden doctor` checks of the syslog, webhook and journald sinks: files readable, peers reachable."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from dropwarden.hookspecs import Check
from dropwarden_actions.settings import JournaldSinkSettings, WebhookSinkSettings
from dropwarden_actions.syslogsettings import SyslogSinkSettings

CONNECT_TIMEOUT = 2.0
OUTBOX_HOLDS = "alerts wait in the outbox until it answers"


def readable_check(name: str, path: Path) -> Check:
    """`path` is a regular file this process can open for reading (its content is never read or shown)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return Check(name, "fail", f"{path} cannot be read by this process: {exc.strerror or exc}")
    if not path.is_file():
        return Check(name, "fail", f"{path} is not a regular file")
    return Check(name, "ok", f"{path} is readable")


def syslog_checks(name: str, sink: SyslogSinkSettings) -> Iterator[Check]:
    """The address parses; the TLS files are readable and load; a TCP/TLS receiver accepts a connection
    (warn when not: the outbox holds the alerts)."""
    try:
        host, port = sink.endpoint()
    except ValueError as exc:
        yield Check(name, "fail", str(exc))
        return
    files = {"ca_file": sink.ca_file, "client_cert": sink.client_cert, "client_key": sink.client_key}
    file_checks = [readable_check(f"{name} {key}", path) for key, path in files.items() if path is not None]
    yield from file_checks
    if sink.transport == "tls" and all(check.status == "ok" for check in file_checks):
        yield _tls_files_load(f"{name} tls", sink)
    yield _reachable(name, sink.transport, host, port)


def _tls_files_load(name: str, sink: SyslogSinkSettings) -> Check:
    try:
        context = ssl.create_default_context(cafile=str(sink.ca_file) if sink.ca_file else None)
        if sink.client_cert is not None:
            key = str(sink.client_key) if sink.client_key else None
            context.load_cert_chain(str(sink.client_cert), key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return Check(name, "fail", f"the CA, certificate or key does not load as PEM: {reason}")
    return Check(name, "ok", "CA" + (" and client certificate" if sink.client_cert else "") + " load")


def _reachable(name: str, transport: str, host: str, port: int) -> Check:
    if transport == "udp":
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            return Check(name, "warn", f"udp {host}:{port}: {exc.strerror or exc}; {OUTBOX_HOLDS}")
        return Check(name, "ok", f"udp {host}:{port} resolves (udp cannot tell whether anyone listens)")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        return Check(
            name, "warn", f"{transport} {host}:{port} does not accept a connection ({why}); {OUTBOX_HOLDS}"
        )
    return Check(name, "ok", f"{transport} {host}:{port} accepts a connection")


def webhook_checks(name: str, sink: WebhookSinkSettings) -> Iterator[Check]:
    """token_file, secret_file and ca_file readable; the URL https, or http only to this host (fail when a
    token would travel in clear, warn otherwise)."""
    files = {"token_file": sink.token_file, "secret_file": sink.secret_file, "ca_file": sink.ca_file}
    for key, path in files.items():
        if path is not None:
            yield readable_check(f"{name} {key}", path)
    url = urlsplit(sink.url)
    if url.scheme == "https":
        yield Check(name, "ok", f"https to {url.hostname}")
    elif _loopback(url.hostname or ""):
        yield Check(name, "ok", f"http to {url.hostname}, this host")
    else:
        status = "fail" if sink.token_file or sink.secret_file else "warn"
        yield Check(
            name, status, f"http to {url.hostname}, another host: alerts travel unencrypted; use https"
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def journald_check(name: str, sink: JournaldSinkSettings) -> Check:
    """journald's native socket exists and is a socket."""
    try:
        mode = os.stat(sink.socket).st_mode
    except OSError as exc:
        return Check(name, "fail", f"{sink.socket}: {exc.strerror or exc} (is systemd-journald running?)")
    if not stat.S_ISSOCK(mode):
        return Check(name, "fail", f"{sink.socket} is not a socket")
    return Check(name, "ok", f"{sink.socket} is a socket")
