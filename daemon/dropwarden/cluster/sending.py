"""Role "watch": a worker's jobs, and the releases of the blobs of those answered, go to Redis in one round
trip from the worker itself; releases made elsewhere go through one sender thread, batched the same way."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog

from dropwarden.cluster.blobs import SHARED, BlobStore
from dropwarden.cluster.connect import GROUP, Keys, retrying
from dropwarden.cluster.outstanding import Outstanding

log = structlog.get_logger("dropwarden.cluster.watch")

# For each job: the verdict cached for its content, or else: the blob, its holder, the path (only when
# it matters), the group (a Redis that lost its data lost it too) and the job, in this order (the entry
# is never there before its blob). Five KEYS per job: verdict ('' = not cached), blob, blob refs, jobs
# stream, job path (''). ARGV per job: the count of the job's arguments that follow, then blob bytes,
# ttl, job id, group, display path and the entry's fields. One job's failure is its own.
_SEND_SCRIPT = """
local results = {}
local a = 1
for i = 0, #KEYS / 5 - 1 do
    local k, n = i * 5, tonumber(ARGV[a])
    local cached = nil
    if KEYS[k + 1] ~= '' then cached = redis.call('GET', KEYS[k + 1]) end
    if cached then
        results[i + 1] = {'cached', cached}
    else
        local ok, entry = pcall(function()
            redis.call('SET', KEYS[k + 2], ARGV[a + 1], 'EX', ARGV[a + 2])
            redis.call('SADD', KEYS[k + 3], ARGV[a + 3])
            redis.call('EXPIRE', KEYS[k + 3], ARGV[a + 2])
            if KEYS[k + 5] ~= '' then redis.call('SET', KEYS[k + 5], ARGV[a + 5], 'EX', ARGV[a + 2]) end
            pcall(redis.call, 'XGROUP', 'CREATE', KEYS[k + 4], ARGV[a + 4], '0', 'MKSTREAM')
            return redis.call('XADD', KEYS[k + 4], '*', unpack(ARGV, a + 6, a + n))
        end)
        if ok then
            results[i + 1] = {'sent', entry}
        else
            results[i + 1] = {'error', type(entry) == 'table' and entry.err or tostring(entry)}
        end
    end
    a = a + n + 1
end
return results
"""

# `blobs.RELEASE_SCRIPT` for each job: two KEYS (blob, blob refs) and one ARGV (job id) per release;
# 1 where the blob was deleted (its last holder), else 0.
_RELEASE_SCRIPT = """
local results = {}
for i = 1, #ARGV do
    redis.call('SREM', KEYS[2 * i], ARGV[i])
    if redis.call('SCARD', KEYS[2 * i]) == 0 then
        redis.call('DEL', KEYS[2 * i - 1], KEYS[2 * i])
        results[i] = 1
    else
        results[i] = 0
    end
end
return results
"""

MOST_AT_ONCE = 256  # queued commands sent in one round trip, at most


@dataclass
class Waiter:
    """A job's answer, as the sender or the reply listener gives it: to whoever `notify`s on it (the
    watcher's work queue), once the answer is in."""

    answered: bool = False
    reply: dict[str, str] | None = None
    verdict: bytes | None = None  # the encoded verdict, when it came with the answer
    fetched: bool = False  # whether `verdict` was looked up (None then means it is gone)
    entry: str | None = None  # the job's stream entry, once sent
    error: BaseException | None = None  # Redis refused the job
    _notify: Callable[[], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, reply: dict[str, str], verdict: bytes | None = None, fetched: bool = False) -> None:
        self._settle(reply, verdict, fetched, None)

    def fail(self, error: BaseException) -> None:
        self._settle(None, None, False, error)

    def _settle(
        self, reply: dict[str, str] | None, verdict: bytes | None, fetched: bool, error: BaseException | None
    ) -> None:
        """The first answer counts; whoever `notify`d is called with it."""
        with self._lock:
            if self.answered:
                return
            self.reply, self.verdict, self.fetched, self.error = reply, verdict, fetched, error
            self.answered = True
            call, self._notify = self._notify, None
        if call is not None:
            call()

    def notify(self, call: Callable[[], None]) -> None:
        """Call `call` once this job is answered (now, if it already is)."""
        with self._lock:
            if not self.answered:
                self._notify = call
                return
        call()

    def again(self) -> None:
        """The answer was read and the job goes out again: wait for the next one."""
        with self._lock:
            self.answered = False
            self.reply, self.verdict, self.fetched, self.error = None, None, False, None


@dataclass(frozen=True)
class Job:
    """A job to send: `fields` for its stream entry; `cache_key` empty when its verdict is not cached."""

    job: str
    sha256: str
    data: bytes
    fields: dict[str, str]
    cache_key: str
    display_path: str  # only for a job whose path matters ("exempt"), else empty
    relpath: bytes  # for its outstanding row, never sent
    waiter: Waiter


@dataclass(frozen=True)
class Release:
    """An answered job: its blob let go (the last holder deletes it), then its outstanding row."""

    job: str
    sha256: str
    store: str
    exempt: bool


class Sender:
    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        blobs: BlobStore,
        outstanding: Outstanding,
        ttl: int,
        stop: threading.Event,
        sent: Callable[[], None],
    ) -> None:
        self.redis, self.keys, self.blobs, self.outstanding = r, keys, blobs, outstanding
        self.ttl = max(1, ttl)
        self._stop = stop
        self._sent = sent
        self._queue: queue.SimpleQueue[Release] = queue.SimpleQueue()  # a worker sends its jobs itself
        self._scripts: dict[str, str] = {}
        self._busy = threading.Lock()  # held while a batch is out: `flush` waits for it
        self._thread = threading.Thread(target=self._run, name="cluster-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send_now(self, batch: list[Job | Release]) -> None:
        """Send `batch` from the calling thread in one round trip (a worker's: no hand-off to the sender
        thread, no wait for its turn). A failure answers each job with it; a release not made leaves its
        blob to its TTL."""
        if not batch:
            return
        try:
            self._send_batch(batch)
        except InterruptedError:
            return  # stopping: the jobs' rows are written, and the next run asks for them again
        except Exception as exc:
            log.error("sending jobs failed", error=type(exc).__name__)
            for item in batch:
                if isinstance(item, Job):
                    item.waiter.fail(exc)

    def release(self, release: Release) -> None:
        self._queue.put(release)

    def flush(self) -> None:
        """At a stop: what is still queued goes now (a blob not let go would wait for its TTL)."""
        with self._busy:
            self._send_batch(self._take(block=False))

    # ------------------------------------------------------------------------------------ work

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._busy:
                self.send_now(self._take(block=True))

    def _take(self, block: bool) -> list[Job | Release]:
        batch: list[Job | Release] = []  # releases only: the list type is `send_now`'s
        if block:
            try:
                batch.append(self._queue.get(timeout=1.0))
            except queue.Empty:
                return batch
        while len(batch) < MOST_AT_ONCE:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _send_batch(self, batch: list[Job | Release]) -> None:
        # each job's row before the job goes (one transaction for all): a watcher killed after sending it
        # asks for it again at its restart
        rows = [
            (job.job, job.fields["watch"], job.relpath, job.sha256, job.fields["store"])
            for job in batch
            if isinstance(job, Job)
        ]
        if rows:
            self.outstanding.add_many(rows)
        pending = batch
        while pending:
            results = retrying("send jobs", lambda batch=pending: self._execute(batch), self._stop)
            unknown: list[Job | Release] = []
            released: list[str] = []
            for item, result in zip(pending, results, strict=True):
                if isinstance(result, redis.exceptions.NoScriptError):
                    unknown.append(item)  # Redis restarted and forgot the scripts: load them again
                elif isinstance(item, Job):
                    self._answer(item, result)
                else:
                    if item.store == SHARED and result == 1:
                        self.blobs.forget_shared(item.sha256)
                    released.append(item.job)
            # the blobs first, then the rows: a watcher killed between finds the jobs outstanding at its
            # restart and lets the blobs go again (a no-op), never a blob that no row remembers
            if released:
                self.outstanding.remove_many(released)
            if unknown:
                self._scripts.clear()
            pending = unknown

    def _execute(self, batch: list[Job | Release]) -> list[Any]:
        """One round trip: every job in one script call, every release in another; each item's result
        (an exception for a job Redis refused, or for all when the call itself failed)."""
        if not self._scripts:
            self._scripts = {
                "send": self.redis.script_load(_SEND_SCRIPT),
                "release": self.redis.script_load(_RELEASE_SCRIPT),
            }
        jobs = [item for item in batch if isinstance(item, Job)]
        releases = [item for item in batch if isinstance(item, Release)]
        pipe = self.redis.pipeline(transaction=False)
        if jobs:
            keys: list[str] = []
            args: list[Any] = []
            for job in jobs:
                path_key = self.keys.job_path(job.job) if job.display_path else ""
                keys += [job.cache_key, self.keys.blob(job.sha256), self.keys.blob_refs(job.sha256)]
                keys += [self.keys.jobs, path_key]
                body = [part for pair in job.fields.items() for part in pair]
                args += [5 + len(body), job.data, self.ttl, job.job, GROUP, job.display_path, *body]
            pipe.evalsha(self._scripts["send"], len(keys), *keys, *args)
        if releases:
            keys = [
                key for r in releases for key in (self.keys.blob(r.sha256), self.keys.blob_refs(r.sha256))
            ]
            pipe.evalsha(self._scripts["release"], len(keys), *keys, *[r.job for r in releases])
        for release in releases:
            if release.exempt:
                pipe.delete(self.keys.job_path(release.job), self.keys.result(release.job))
        results = iter(pipe.execute(raise_on_error=False))
        by_item: dict[int, Any] = {}
        for group in ([jobs] if jobs else []) + ([releases] if releases else []):
            answer = next(results)
            for index, item in enumerate(group):
                if isinstance(answer, Exception):
                    by_item[id(item)] = answer
                elif group is jobs and _text(answer[index][0]) == "error":
                    by_item[id(item)] = redis.ResponseError(_text(answer[index][1]))
                else:
                    by_item[id(item)] = answer[index]
        return [by_item[id(item)] for item in batch]

    def _answer(self, item: Job, result: Any) -> None:
        waiter = item.waiter
        if isinstance(result, Exception):
            waiter.fail(result)
            return
        kind, value = result[0], result[1]
        if kind in (b"cached", "cached"):
            waiter.answer({"status": "ok", "cached": "1"}, value, fetched=True)
            return
        waiter.entry = value.decode() if isinstance(value, bytes) else str(value)
        self._sent()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
