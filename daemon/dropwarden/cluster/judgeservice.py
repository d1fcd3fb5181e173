"""Role "judge": no watches; read jobs with the consumer group, judge their blobs, reply, acknowledge."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any

import redis
import structlog

from dropwarden import __version__
from dropwarden.cluster import codec
from dropwarden.cluster.blobs import BlobStore
from dropwarden.cluster.connect import GROUP, TRANSIENT, Keys, client, ensure_group, retrying
from dropwarden.cluster.remote import cluster_counts
from dropwarden.config import LoadedConfig
from dropwarden.judge.intake import FileIdentity, Snapshot
from dropwarden.runtime import Runtime, build_runtime, ruleset_version

log = structlog.get_logger("dropwarden.cluster.judge")

CLAIM_EVERY = 1.0  # seconds between one worker's looks for jobs idle past claim_idle


class JudgeService:
    """`dropwarden run` under `[cluster] role = "judge"`: `[daemon] workers` jobs at a time."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.settings = loaded.settings
        self.cluster = self.settings.cluster
        self.keys = Keys(self.cluster.prefix)
        self._stop = threading.Event()
        self.judged = 0
        self._lock = threading.Lock()

    def run(self) -> int:
        runtime = build_runtime(self.settings)
        try:
            return self._run(runtime)
        finally:
            runtime.close()

    def _run(self, runtime: Runtime) -> int:
        for error in runtime.plugins.errors:
            log.warning("plugin not loaded", plugin=error.name, stage=error.stage, error=error.error)
        for part in [*runtime.registry.detectors.values(), *runtime.registry.extractors.values()]:
            warm_up = getattr(part, "warm_up", None)
            if warm_up is not None:
                try:
                    warm_up()
                except Exception as exc:
                    log.error("detector warm-up failed", detector=part.id, error=type(exc).__name__)
        self.runtime = runtime
        self.ruleset = ruleset_version(runtime)
        self.redis = client(self.cluster)
        self.blobs = BlobStore(self.redis, self.keys, self.cluster)
        retrying("create the jobs group", lambda: ensure_group(self.redis, self.keys), self._stop)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stop.set())
        workers = self.settings.daemon.workers
        name = f"{socket.gethostname().split('.')[0]}-{os.getpid()}"
        threads = [
            threading.Thread(target=self._worker, args=(f"{name}-{i}",), name=f"judge-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in threads:
            thread.start()
        log.info("judging", workers=workers, ruleset=self.ruleset, version=__version__)
        while not self._stop.wait(10.0):
            log.debug("judge counts", judged=self.judged)
        log.info("stopping", judged=self.judged)
        for thread in threads:
            thread.join(timeout=self.settings.daemon.drain_timeout)
        return 0

    # ------------------------------------------------------------------------------------ work

    def _worker(self, consumer: str) -> None:
        """Claim a job idle past claim_idle (its judge died), else read a new one; judge it; repeat. A job
        in hand is finished before stopping; one left unacknowledged is claimed by another judge."""
        next_claim = 0.0
        while not self._stop.is_set():
            try:
                entry = None
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + CLAIM_EVERY
                    entry = self._claim(consumer)
                if entry is None:
                    jobs = {self.keys.jobs: ">"}
                    answer = self.redis.xreadgroup(GROUP, consumer, jobs, count=1, block=1000)
                    entries = answer[0][1] if answer else []
                    entry = entries[0] if entries else None
                    redelivered = False
                else:
                    redelivered = True
                if entry is not None:
                    self._handle(entry[0], _fields(entry[1]), redelivered)
            except TRANSIENT:
                self._stop.wait(0.5)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost its data (restarted without AOF): start again
                    ensure_group(self.redis, self.keys)
                else:
                    log.error("job handling failed", error=type(exc).__name__)
                    self._stop.wait(1.0)
            except Exception as exc:  # left unacknowledged: claimed again after claim_idle, or dead-lettered
                log.error("job handling failed", error=type(exc).__name__)
                self._stop.wait(1.0)

    def _claim(self, consumer: str) -> tuple[Any, dict[str, str]] | None:
        """A job another judge read and never acknowledged for claim_idle seconds (XAUTOCLAIM); one read
        more than max_deliver times goes to the dead-letter stream instead."""
        idle_ms = int(self.cluster.claim_idle * 1000)
        while True:
            answer = self.redis.xautoclaim(self.keys.jobs, GROUP, consumer, idle_ms, "0-0", count=1)
            claimed = answer[1] if answer and len(answer) > 1 else []
            claimed = [entry for entry in claimed if entry and entry[1]]  # deleted entries come back empty
            if not claimed:
                return None
            entry_id, raw = claimed[0]
            fields = _fields(raw)
            pending = self.redis.xpending_range(self.keys.jobs, GROUP, entry_id, entry_id, 1)
            delivered = int(pending[0]["times_delivered"]) if pending else 1
            if delivered <= self.cluster.max_deliver:
                return entry_id, raw
            self._dead_letter(entry_id, fields, delivered)

    def _dead_letter(self, entry_id: Any, fields: dict[str, str], delivered: int) -> None:
        job, sha256 = fields.get("job"), fields.get("sha256")
        log.error("job dead-lettered", job=job, sha256=sha256, delivered=delivered)
        pipe = self.redis.pipeline()
        pipe.xadd(self.keys.dead, {**fields, "delivered": str(delivered)}, maxlen=100_000, approximate=True)
        pipe.hincrby(self.keys.stats, "dead_lettered", 1)
        self._reply(pipe, fields, {"status": "failed", "reason": "dead-lettered"})
        pipe.xack(self.keys.jobs, GROUP, entry_id)
        pipe.xdel(self.keys.jobs, entry_id)
        pipe.execute()

    def _handle(self, entry_id: Any, fields: dict[str, str], redelivered: bool) -> None:
        cluster = self.cluster
        job, sha256 = fields.get("job", ""), fields.get("sha256", "")
        exempt = fields.get("exempt") == "1"
        key = self.keys.result(job) if exempt else self.keys.verdict(self.ruleset, sha256)
        if redelivered:
            self.redis.hincrby(self.keys.stats, "redelivered", 1)
        if exempt or not self.redis.exists(key):
            data = self.blobs.get(sha256, fields.get("store", ""))
            if data is None:
                self._finish(entry_id, fields, {"status": "blob_missing"})
                return
            display = ""
            if exempt:
                display = _text(self.redis.get(self.keys.job_path(job)) or b"")
            content = self.runtime.judge.judge_content(_snapshot(data, sha256, display))
            ttl = int(cluster.blob_ttl if exempt else cluster.verdict_ttl)
            verdict = (key, codec.encode(content), max(1, ttl))
            self._finish(entry_id, fields, {"status": "ok", "key": key}, verdict)
            with self._lock:
                self.judged += 1
            return
        self._finish(entry_id, fields, {"status": "ok", "key": key})

    def _finish(
        self,
        entry_id: Any,
        fields: dict[str, str],
        reply: dict[str, str],
        verdict: tuple[str, bytes, int] | None = None,
    ) -> None:
        """Store the verdict (key, encoded, ttl) if one was judged, reply, acknowledge: one transaction."""
        pipe = self.redis.pipeline()
        if verdict is not None:
            key, encoded, ttl = verdict
            pipe.set(key, encoded, ex=ttl)
            pipe.hincrby(self.keys.stats, "judged", 1)
        self._reply(pipe, fields, reply)
        pipe.xack(self.keys.jobs, GROUP, entry_id)
        pipe.xdel(self.keys.jobs, entry_id)
        pipe.execute()

    def _reply(self, pipe: Any, fields: dict[str, str], reply: dict[str, str]) -> None:
        stream = fields.get("reply")
        if stream and stream.startswith(f"{self.cluster.prefix}:replies:"):
            body = {"job": fields.get("job", ""), "ruleset": self.ruleset, "asked": fields.get("ruleset", "")}
            pipe.xadd(stream, {**body, **reply}, maxlen=1_000_000, approximate=True)

    def counts(self) -> dict[str, int]:
        return cluster_counts(self.redis, self.keys)


def _snapshot(data: bytes, sha256: str, display_path: str) -> Snapshot:
    """The job's bytes as a snapshot: the judge never sees the file itself, so its identity is the size."""
    return Snapshot(
        display_path=display_path,
        data=data,
        sha256=sha256,
        identity=FileIdentity(0, 0, len(data), 0, 0),
        mode=0o100600,
        uid=os.getuid(),
        gid=os.getgid(),
        nlink=1,
        ctime_ns=0,
    )


def _fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
