"""Redis from `[cluster]`: the client (ACL user, password file, TLS), the key names, and retrying."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis
import structlog

from dropwarden.cluster.settings import ClusterSettings

log = structlog.get_logger("dropwarden.cluster")

T = TypeVar("T")
GROUP = "judges"
# Redis unreachable, restarting (LOADING), or read-only while a replica takes over: wait, never drop.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError)


@dataclass(frozen=True)
class Keys:
    """Every key the cluster uses, under `[cluster] prefix`."""

    prefix: str

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    def replies(self, node: str) -> str:
        return f"{self.prefix}:replies:{node}"

    def blob(self, sha256: str) -> str:
        return f"{self.prefix}:blob:{sha256}"

    def blob_refs(self, sha256: str) -> str:
        return f"{self.prefix}:blobrefs:{sha256}"

    def verdict(self, ruleset: str, sha256: str) -> str:
        return f"{self.prefix}:verdict:{ruleset}:{sha256}"

    def result(self, job: str) -> str:
        """A verdict that is not cached (its path mattered): for its job only."""
        return f"{self.prefix}:result:{job}"

    def job_path(self, job: str) -> str:
        return f"{self.prefix}:jobpath:{job}"


def client(settings: ClusterSettings) -> redis.Redis:
    """A client for `settings.url`; rediss:// verifies the server's certificate (against `ssl_ca_file`,
    or the system's CAs) and its host name, and presents `ssl_cert_file` when given."""
    password = None
    if settings.password_file is not None:
        password = settings.password_file.read_text(encoding="utf-8").strip()
    options: dict = {
        "username": settings.username,
        "password": password,
        "socket_timeout": 30.0,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 15,
    }
    if settings.url.startswith("rediss://"):
        options.update(
            ssl_cert_reqs=ssl.CERT_REQUIRED,
            ssl_check_hostname=True,
            ssl_ca_certs=str(settings.ssl_ca_file) if settings.ssl_ca_file else None,
            ssl_certfile=str(settings.ssl_cert_file) if settings.ssl_cert_file else None,
            ssl_keyfile=str(settings.ssl_key_file) if settings.ssl_key_file else None,
        )
    return redis.Redis.from_url(settings.url, **options)


def ensure_group(r: redis.Redis, keys: Keys) -> None:
    """The jobs stream and its consumer group (from the stream's start: no job added before it is lost)."""
    try:
        r.xgroup_create(keys.jobs, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def retrying(what: str, call: Callable[[], T], stop: threading.Event | None = None) -> T:
    """`call()` until Redis answers: while it is down or restarting the caller waits (logged once a
    minute), so work is delayed, never dropped. Raises only when `stop` is set meanwhile."""
    delay, last_log = 0.1, 0.0
    while True:
        try:
            return call()
        except TRANSIENT as exc:
            now = time.monotonic()
            if now - last_log > 60:
                log.warning("redis unavailable; waiting", doing=what, error=type(exc).__name__)
                last_log = now
        if stop is not None and stop.wait(delay):
            raise InterruptedError(what)
        if stop is None:
            time.sleep(delay)
        delay = min(delay * 2, 2.0)
