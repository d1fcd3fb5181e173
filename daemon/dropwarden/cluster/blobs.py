"""File bytes between a watcher and a judge, content-addressed by sha256: in Redis (with a TTL) up to
`[cluster] blob_max_bytes`, above it as a file in `[cluster] shared_dir` (a directory every watcher and
judge mounts). Each blob keeps the set of jobs that hold it (idempotent, so a retried call counts once);
the last job to let go deletes it, so identical content in flight twice is stored once."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import redis

from dropwarden.cluster.connect import Keys
from dropwarden.cluster.settings import ClusterSettings

REDIS, SHARED = "redis", "shared"

# Let go of a blob: drop the job from its holders; the last one out deletes the bytes (atomically).
RELEASE_SCRIPT = """
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('SCARD', KEYS[2]) == 0 then
    redis.call('DEL', KEYS[1], KEYS[2])
    return 1
end
return 0
"""


class BlobStore:
    def __init__(self, r: redis.Redis, keys: Keys, settings: ClusterSettings) -> None:
        self.redis = r
        self.keys = keys
        self.max_bytes = int(settings.blob_max_bytes)
        self.shared_dir = settings.shared_dir
        self.ttl = max(1, int(settings.blob_ttl))

    def store_for(self, size: int) -> str | None:
        """Where a blob of `size` bytes goes; None when nowhere (too large and no shared_dir)."""
        if size <= self.max_bytes:
            return REDIS
        return SHARED if self.shared_dir is not None else None

    def put(self, sha256: str, data: bytes, store: str, job: str, pipe: Any = None) -> None:
        """Store `data` (whose digest is `sha256`) for `job`, which holds it until `release`. With `pipe`
        (a pipeline the caller executes) the commands join it: one round trip with the job's own."""
        own = pipe is None
        if own:
            pipe = self.redis.pipeline()
        if store == REDIS:
            pipe.set(self.keys.blob(sha256), data, ex=self.ttl)
        else:
            self._write_shared(sha256, data)
        pipe.sadd(self.keys.blob_refs(sha256), job)
        pipe.expire(self.keys.blob_refs(sha256), self.ttl)
        if own:
            pipe.execute()

    def get(self, sha256: str, store: str) -> bytes | None:
        """The blob's bytes, or None when it is gone (expired, deleted) or is not what its name says."""
        if store == REDIS:
            data = self.redis.get(self.keys.blob(sha256))
        else:
            try:
                data = self._shared_path(sha256).read_bytes()
            except OSError:
                data = None
        if data is None or hashlib.sha256(data).hexdigest() != sha256:
            return None
        return data

    def release(self, sha256: str, store: str, job: str) -> None:
        """`job` is done with the blob: the last holder deletes it (a job that stores it again meanwhile
        finds it gone, and its judge asks for it once more)."""
        keys = [self.keys.blob(sha256), self.keys.blob_refs(sha256)]
        if self.redis.eval(RELEASE_SCRIPT, 2, *keys, job) and store == SHARED:
            self.forget_shared(sha256)

    def forget_shared(self, sha256: str) -> None:
        """Delete a shared blob whose last holder let it go."""
        with contextlib.suppress(FileNotFoundError):
            self._shared_path(sha256).unlink()

    def sweep_shared(self) -> int:
        """Delete shared blobs older than the TTL (their jobs died with no one to release them)."""
        if self.shared_dir is None:
            return 0
        removed, cutoff = 0, time.time() - self.ttl
        for path in self.shared_dir.glob("*.blob"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def _shared_path(self, sha256: str) -> Path:
        assert self.shared_dir is not None
        return self.shared_dir / f"{sha256}.blob"

    def _write_shared(self, sha256: str, data: bytes) -> None:
        path = self._shared_path(sha256)
        temporary = path.with_name(f".{sha256}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
