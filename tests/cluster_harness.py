"""A real redis-server and real watcher and judge processes for the cluster tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from .daemon_harness import DaemonProcess
from .test_daemon import Drop

PREFIX = "dropwarden"

# A test-only plugin: "SLOW-MARKER" takes a judge 3 s; "POISON-MARKER" kills the judge's process.
FAULTS = """
import os
import time

from dropwarden.hookspecs import hookimpl


class Faults:
    id = "faults"
    version = "1"
    view_kinds = frozenset({"text"})

    def detect(self, view, ctx):
        if "POISON-MARKER" in view.text:
            os._exit(70)
        if "SLOW-MARKER" in view.text:
            time.sleep(3.0)
        return []


@hookimpl
def dropwarden_register_detectors(register):
    register(Faults())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """redis-server on 127.0.0.1 (a free port), its data in `root`, append-only file on."""

    def __init__(
        self,
        root: Path,
        tls: dict[str, Path] | None = None,
        password: str | None = None,
        appendfsync: str = "always",  # the tests: nothing lost on restart; the benchmark: "everysec"
    ) -> None:
        self.root = root
        self.appendfsync = appendfsync
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.tls = tls  # make_certificates(): the server's certificate and key, and the CA
        self.password = password  # an ACL user "dropwarden" with it; the default user off
        root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _options(self) -> list[str]:
        options: list[str] = []
        if self.tls:
            options += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            options += ["--tls-cert-file", str(self.tls["cert"]), "--tls-key-file", str(self.tls["key"])]
            options += ["--tls-ca-cert-file", str(self.tls["ca"])]
        else:
            options += ["--port", str(self.port)]
        if self.password:
            options += ["--user", "default", "off"]
            options += ["--user", "dropwarden", "on", f">{self.password}", "~*", "&*", "+@all"]
        return options

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                binary,
                *self._options(),
                "--bind", "127.0.0.1",
                "--dir", str(self.root),
                "--appendonly", "yes",
                "--appendfsync", self.appendfsync,
                "--save", "",
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                pass
            except (redis.BusyLoadingError, redis.AuthenticationError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    def client(self) -> redis.Redis:
        if self.tls or self.password:
            return redis.Redis.from_url(
                self.url,
                username="dropwarden" if self.password else None,
                password=self.password,
                socket_timeout=10,
                **({"ssl_ca_certs": str(self.tls["ca"])} if self.tls else {}),
            )
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def blobs(self) -> list[bytes]:
        return list(self.client().scan_iter(f"{PREFIX}:blob*"))

    def dead_letters(self) -> int:
        return self.client().xlen(f"{PREFIX}:dead")

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client().hgetall(f"{PREFIX}:stats").items()}


class JudgeProcess(DaemonProcess):
    """`dropwarden run` with the watcher's configuration file and `[cluster] role = "judge"` from the
    environment; ready once it logs "judging"."""

    def _read_logs(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log_lines.append(line.rstrip("\n"))
            if '"event": "judging"' in line:
                self._ready.set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def cluster_drop(root: Path, redis_url: str, extra: str = "", watch_extra: str = "") -> Drop:
    """A drop folder whose daemon is a `watch` node of the cluster at `redis_url`."""
    cluster = (
        f'[cluster]\nrole = "watch"\nurl = "{redis_url}"\nnode = "w1"\nclaim_idle = 1.0\n'
        f"job_timeout = 5.0\n{extra}"
    )
    drop = Drop(root, extra="workers = 4\n" + cluster)
    if watch_extra:
        drop.config.write_text(
            drop.config.read_text().replace("[[alerts.sink]]", watch_extra + "[[alerts.sink]]")
        )
    return drop


def judge(drop: Drop, env: dict[str, str] | None = None, workers: int = 2) -> JudgeProcess:
    return JudgeProcess(
        drop.config,
        drop.audit,
        {"DROPWARDEN_CLUSTER__ROLE": "judge", "DROPWARDEN_DAEMON__WORKERS": str(workers), **(env or {})},
    )


def where_files_are(drop: Drop) -> dict[str, list[str]]:
    """Each file's first line (its unique token) -> the places it is: inbox, outbound, quarantine."""
    places: dict[str, list[str]] = {}
    for place, folder in (
        ("inbox", drop.inbox),
        ("outbound", drop.outbound),
        ("quarantine", drop.quarantine),
    ):
        if not folder.exists():
            continue
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.endswith(".json") and not path.name.startswith("."):
                token = path.read_text(errors="replace").split("\n", 1)[0]
                places.setdefault(token, []).append(place)
    return places


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
