"""The `syslog` alert sink: RFC 5424 messages over UDP, TCP (RFC 6587 octet counting) or TLS (RFC 5425)."""

from __future__ import annotations

import fcntl
import select
import socket
import ssl
import struct
import termios
import threading
import time
from typing import Any

from dropwarden_actions.syslog5424 import STREAM_MAX_BYTES, UDP_MAX_BYTES, syslog_message
from dropwarden_actions.syslogsettings import SyslogSinkSettings

CONNECT_TIMEOUT = 10.0
ACK_TIMEOUT = 10.0  # how long the peer's TCP may take to acknowledge a sent message


class SyslogUnavailable(Exception):
    """The receiver could not be reached or did not take the message: the outbox retries it."""


class SyslogSink:
    """A notify action: one RFC 5424 message per alert. TCP and TLS keep one connection, opened again
    after any failure; a message counts as delivered once the receiver's TCP has acknowledged all of it.
    `send_batch` writes the due messages of a pass together and waits for one acknowledgement."""

    kind = "notify"

    def __init__(self, settings: SyslogSinkSettings) -> None:
        self.id = settings.id
        self.settings = settings
        self.host, self.port = settings.endpoint()
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = _tls_context(settings) if settings.transport == "tls" else None

    def describe(self) -> str:
        return (
            f"send each alert as RFC 5424 syslog ({self.settings.format}) over {self.settings.transport} to "
            + (f"{self.host}:{self.port}")
        )

    def send(self, payload: dict[str, Any]) -> None:
        udp = self.settings.transport == "udp"
        message = syslog_message(payload, self.settings.format, UDP_MAX_BYTES if udp else STREAM_MAX_BYTES)
        with self._lock:
            if udp:
                self._send_datagram(message)
            else:
                self._send_framed(str(len(message)).encode() + b" " + message)

    def send_batch(self, payloads: list[dict[str, Any]]) -> list[Exception | None]:
        """TCP/TLS: every message framed into one write, counted once the receiver's TCP acknowledged it
        all (a failure retries them all: the same ids again). UDP: one datagram each, as `send`."""
        if self.settings.transport == "udp":
            return [_outcome(self.send, payload) for payload in payloads]
        outcomes: list[Exception | None] = [None] * len(payloads)
        frames: list[bytes] = []
        for index, payload in enumerate(payloads):
            try:
                message = syslog_message(payload, self.settings.format, STREAM_MAX_BYTES)
            except Exception as exc:  # this alert alone cannot be rendered: the others still go
                outcomes[index] = exc
                continue
            frames.append(str(len(message)).encode() + b" " + message)
        if frames:
            with self._lock:
                self._send_framed(b"".join(frames))
        return outcomes

    def _send_datagram(self, message: bytes) -> None:
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, address = infos[0]
            with socket.socket(family, kind, proto) as sock:
                sock.sendto(message, address)
        except OSError as exc:
            raise SyslogUnavailable(f"udp {self.host}:{self.port}: {exc.strerror or exc}") from None

    def _send_framed(self, frame: bytes) -> None:
        try:
            if self._socket is not None and _peer_closed(self._socket):
                self._drop()
            if self._socket is None:
                self._socket = self._connect()
            self._socket.sendall(frame)
            _wait_acknowledged(self._socket)
        except (OSError, ssl.SSLError) as exc:
            self._drop()
            what = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            )
            raise SyslogUnavailable(f"{self.settings.transport} {self.host}:{self.port}: {what}") from None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self._tls is None:
            return sock
        try:
            return self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def _drop(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            except OSError:
                pass
            self._socket = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def _outcome(send: Any, payload: dict[str, Any]) -> Exception | None:
    try:
        send(payload)
    except Exception as exc:
        return exc
    return None


def _tls_context(settings: SyslogSinkSettings) -> ssl.SSLContext:
    """Verifies the receiver's certificate (against `ca_file`, else the system's) and its host name."""
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.client_cert is not None:
        context.load_cert_chain(
            str(settings.client_cert), str(settings.client_key) if settings.client_key else None
        )
    return context


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the receiver has closed or reset the connection (a receiver never sends on it): sending
    on such a socket would seem to succeed and lose the message."""
    raw = sock.fileno()
    readable, _, _ = select.select([raw], [], [], 0)
    if not readable:
        return False
    try:
        return _recv_peek(sock) == b""
    except OSError:
        return True


def _recv_peek(sock: socket.socket) -> bytes:
    if isinstance(sock, ssl.SSLSocket):  # TLS: a close_notify or a bare FIN; either way the end
        return b""
    return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)


def _wait_acknowledged(sock: socket.socket) -> None:
    """Until the peer's TCP has acknowledged every byte sent (the send queue is empty)."""
    deadline = time.monotonic() + ACK_TIMEOUT
    buffer = bytearray(struct.calcsize("i"))
    pause = 0.00005  # a near receiver acknowledges in microseconds: poll fast first, then back off to 5 ms
    while True:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buffer)
        if struct.unpack("i", buffer)[0] == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"receiver did not acknowledge within {ACK_TIMEOUT:g} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.005)
