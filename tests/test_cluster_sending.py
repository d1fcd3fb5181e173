"""A watcher's sender against a real redis-server: a batch of jobs goes out together (each asks the verdict
cache first), answered jobs let their blobs go (the last holder deletes them) and then their rows."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time

import pytest

from dropwarden.cluster.blobs import REDIS, BlobStore
from dropwarden.cluster.connect import Keys, client, ensure_group
from dropwarden.cluster.outstanding import Outstanding
from dropwarden.cluster.sending import Job, Release, Sender, Waiter
from dropwarden.cluster.settings import ClusterSettings

from .cluster_harness import RedisServer
from .conftest import require


@pytest.fixture
def redis_url(tmp_path):
    require(shutil.which("redis-server") is not None, "redis-server")
    server = RedisServer(tmp_path / "redis").start()
    yield server.url
    server.stop()


class Parts:
    def __init__(self, tmp_path, url: str) -> None:
        self.settings = ClusterSettings(role="watch", url=url)
        self.keys = Keys(self.settings.prefix)
        self.redis = client(self.settings)
        ensure_group(self.redis, self.keys)
        self.outstanding = Outstanding(tmp_path / "cluster.db")
        self.stop = threading.Event()
        self.sent = 0
        blobs = BlobStore(self.redis, self.keys, self.settings)
        self.sender = Sender(self.redis, self.keys, blobs, self.outstanding, 600, self.stop, self._count)

    def _count(self) -> None:
        self.sent += 1

    def job(self, name: str, data: bytes, cached: bool = True) -> Job:
        sha256 = hashlib.sha256(data).hexdigest()
        fields = {"job": name, "sha256": sha256, "size": str(len(data)), "watch": "inbox", "store": REDIS}
        cache_key = self.keys.verdict("rules-1", sha256) if cached else ""
        return Job(name, sha256, data, fields, cache_key, "", name.encode(), Waiter())


def settled(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_jobs_sent_together_are_all_sent_each_after_its_blob(tmp_path, redis_url):
    parts = Parts(tmp_path, redis_url)
    jobs = [parts.job(f"job-{i}", f"file {i}".encode()) for i in range(40)]
    parts.sender.send_now(jobs)  # one batch, as a worker sends it
    assert settled(lambda: all(job.waiter.entry for job in jobs))
    entries = parts.redis.xrange(parts.keys.jobs)
    assert [e[1][b"job"].decode() for e in entries] == [job.job for job in jobs]
    for job in jobs:
        assert parts.redis.get(parts.keys.blob(job.sha256)) == job.data
        assert parts.redis.smembers(parts.keys.blob_refs(job.sha256)) == {job.job.encode()}
        assert 0 < parts.redis.ttl(parts.keys.blob(job.sha256)) <= 600
        assert not job.waiter.answered  # sent, not answered: the judges answer
    assert parts.sent == 40
    parts.stop.set()


def test_a_cached_verdict_answers_the_job_and_nothing_is_stored_or_sent(tmp_path, redis_url):
    parts = Parts(tmp_path, redis_url)
    job = parts.job("job-cached", b"seen before")
    parts.redis.set(parts.keys.verdict("rules-1", job.sha256), b"the encoded verdict")
    parts.sender.send_now([job])
    assert settled(lambda: job.waiter.answered)
    assert (job.waiter.reply, job.waiter.verdict, job.waiter.fetched) == (
        {"status": "ok", "cached": "1"},
        b"the encoded verdict",
        True,
    )
    assert parts.redis.xlen(parts.keys.jobs) == 0
    assert parts.redis.exists(parts.keys.blob(job.sha256)) == 0
    assert parts.sent == 0
    parts.stop.set()


def test_a_job_whose_path_matters_skips_the_cache(tmp_path, redis_url):
    parts = Parts(tmp_path, redis_url)
    job = parts.job("job-exempt", b"seen before", cached=False)
    parts.redis.set(parts.keys.verdict("rules-1", job.sha256), b"a verdict for another path")
    parts.sender.send_now([job])
    assert settled(lambda: job.waiter.entry is not None)
    assert not job.waiter.answered
    assert parts.redis.xlen(parts.keys.jobs) == 1
    parts.stop.set()


def test_scripts_redis_forgot_are_loaded_again(tmp_path, redis_url):
    """A restarted Redis has no scripts: the jobs refused with NOSCRIPT are sent again, once each."""
    parts = Parts(tmp_path, redis_url)
    first = parts.job("job-1", b"one")
    parts.sender.send_now([first])
    assert settled(lambda: first.waiter.entry is not None)
    parts.redis.script_flush()
    second = parts.job("job-2", b"two")
    parts.sender.send_now([second])
    assert settled(lambda: second.waiter.entry is not None)
    assert second.waiter.error is None
    assert [e[1][b"job"] for e in parts.redis.xrange(parts.keys.jobs)] == [b"job-1", b"job-2"]
    parts.stop.set()


def test_a_blob_goes_with_its_last_holder_and_each_row_after_its_release(tmp_path, redis_url):
    parts = Parts(tmp_path, redis_url)
    parts.sender.start()
    a, b = parts.job("job-a", b"same bytes"), parts.job("job-b", b"same bytes")
    parts.sender.send_now([a, b])
    assert settled(lambda: a.waiter.entry is not None and b.waiter.entry is not None)
    blob = parts.keys.blob(a.sha256)
    parts.sender.release(Release("job-a", a.sha256, REDIS, exempt=False))
    assert settled(lambda: [j.job for j in parts.outstanding.all()] == ["job-b"])
    assert parts.redis.get(blob) == b"same bytes"  # job-b still holds it
    parts.sender.release(Release("job-b", b.sha256, REDIS, exempt=False))
    assert settled(lambda: parts.outstanding.all() == [])
    assert parts.redis.exists(blob, parts.keys.blob_refs(a.sha256)) == 0
    parts.stop.set()


def test_what_is_queued_at_a_stop_is_flushed(tmp_path, redis_url):
    """Releases queued when the watcher stops are sent by `flush`, not left to the blobs' TTL."""
    parts = Parts(tmp_path, redis_url)
    job = parts.job("job-late", b"late")
    parts.sender.send_now([job])
    parts.sender.release(Release("job-late", job.sha256, REDIS, exempt=False))
    parts.stop.set()
    parts.sender.flush()  # the sender thread never ran
    assert parts.redis.xlen(parts.keys.jobs) == 1
    assert parts.redis.exists(parts.keys.blob(job.sha256)) == 0
    assert parts.outstanding.all() == []


def test_a_workers_batch_goes_in_one_round_trip_and_one_jobs_failure_is_its_own(tmp_path, redis_url):
    """A watcher's worker sends its batch itself: the jobs (each after its outstanding row) and the
    releases of jobs already answered, in one round trip. A job Redis refuses (here its blob's holders
    key is of the wrong type) fails alone: the others of the same script call are sent."""
    parts = Parts(tmp_path, redis_url)
    done = parts.job("job-done", b"answered before")
    parts.sender.send_now([done])
    assert done.waiter.entry is not None and [j.job for j in parts.outstanding.all()] == ["job-done"]
    good, bad, also = (
        parts.job("job-good", b"one"),
        parts.job("job-bad", b"two"),
        parts.job("job-3", b"three"),
    )
    parts.redis.set(parts.keys.blob_refs(bad.sha256), b"not a set")
    parts.sender.send_now([good, bad, also, Release("job-done", done.sha256, REDIS, exempt=False)])
    assert good.waiter.entry is not None and also.waiter.entry is not None
    assert bad.waiter.answered and isinstance(bad.waiter.error, Exception) and bad.waiter.entry is None
    assert [e[1][b"job"] for e in parts.redis.xrange(parts.keys.jobs)] == [b"job-done", b"job-good", b"job-3"]
    assert parts.redis.exists(parts.keys.blob(done.sha256)) == 0  # released: its only holder
    assert sorted(j.job for j in parts.outstanding.all()) == ["job-3", "job-bad", "job-good"]
    parts.stop.set()
