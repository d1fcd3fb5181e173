"""Role "watch": each file's bytes go to the judge hosts through Redis, and the verdict comes back."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import structlog

from dropwarden.cluster import codec
from dropwarden.cluster.blobs import REDIS, SHARED, BlobStore
from dropwarden.cluster.budget import SnapshotBudget
from dropwarden.cluster.connect import GROUP, TRANSIENT, Keys, client, ensure_group, retrying
from dropwarden.cluster.outstanding import Outstanding
from dropwarden.cluster.sending import Job, Release, Sender, Waiter
from dropwarden.cluster.settings import ClusterSettings
from dropwarden.judge.detect import DetectorRun
from dropwarden.judge.intake import Snapshot
from dropwarden.judge.judge import Content, ContentJudging, Deferred, Judge, Judgement
from dropwarden.judge.names import JudgedName
from dropwarden.judge.sniff import sniff
from dropwarden.registry import Registry
from dropwarden.verdict import Problem, Reason

log = structlog.get_logger("dropwarden.cluster.watch")

# A blob a judge found missing (expired, or deleted by another job of the same content) is sent again
# this many times before the file is unscanned.
MAX_RESENDS = 3


def path_exempt(registry: Registry, display_path: str) -> bool:
    """Whether a detector exempts this path (`[rules.allow] paths`): its verdict then depends on the
    path, so it is neither taken from nor put into the verdict cache, and the path goes to the judge."""
    for detector in registry.detectors.values():
        allowed = getattr(detector, "path_allowed", None)
        if allowed is not None and allowed(display_path):
            return True
    return False


@dataclass
class Request:
    """A file's content sent to the judges, and its answer to come."""

    job: str
    watch: str
    ruleset: str
    snapshot: Snapshot
    store: str
    exempt: bool
    waiter: Waiter
    sent_at: float  # monotonic: when its job last went out
    resends: int = 0  # sent again because a judge found its blob missing
    outgoing: Job | None = None  # its job, until `send` sends it with the others of its batch

    def release(self) -> Release:
        """Its blob let go, then its outstanding row (a no-op for a blob the job never stored)."""
        return Release(self.job, self.snapshot.sha256, self.store, self.exempt)


class RemoteJudging:
    """Sends jobs and waits for their verdicts; `content_for` is the pipeline's seam (`PipelineContext`)."""

    def __init__(
        self,
        settings: ClusterSettings,
        state_dir: Path,
        requeue: Callable[[str, str], None],
        largest_file: int = 64 << 20,  # [limits] max_file_size
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.node = settings.node or socket.gethostname().split(".")[0]
        self.reply_stream = self.keys.replies(self.node)
        self.redis = client(settings)
        self.blobs = BlobStore(self.redis, self.keys, settings)
        self.outstanding = Outstanding(state_dir / "cluster.db")
        self._requeue = requeue
        self._lock = threading.Lock()
        self._waiting: dict[str, Request] = {}  # job -> the file in flight
        self._stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self._judged_samples: deque[tuple[float, int]] = deque(maxlen=120)
        self._started = time.time()
        self._last_progress = time.monotonic()  # a verdict came (or a job went out)
        # The watcher's files in flight (admitted by its work queue, not yet acted on), and the snapshot
        # bytes they may hold: the largest file there may be until one is read, then what it read.
        self._admitted = 0
        self.largest = largest_file
        self._budget = SnapshotBudget(4 * largest_file, largest_file)
        self.deliver: Callable[[Any], None] = lambda token: None  # an answered file's token: to a worker
        self.reconsider: Callable[[], None] = lambda: None  # room was freed: files may be admitted
        self._listener = threading.Thread(target=self._listen, name="cluster-replies", daemon=True)
        ttl = int(settings.blob_ttl)
        sent = lambda: self._count("sent")  # noqa: E731
        self.sender = Sender(self.redis, self.keys, self.blobs, self.outstanding, ttl, self._stop, sent)

    # ------------------------------------------------------------------------------------ life

    def start(self) -> None:
        """Listen for verdicts, and ask again for every job a previous run left outstanding."""
        retrying("create the jobs group", lambda: ensure_group(self.redis, self.keys), self._stop)
        self._listener.start()
        self.sender.start()
        left = self.outstanding.all()
        for job in left:
            self._requeue(job.watch, os.fsdecode(job.relpath))
        if left:
            log.info("asking again for outstanding jobs", count=len(left))

    def close(self) -> None:
        self._stop.set()
        try:
            self.sender.flush()  # answered jobs' blobs go now, not at their TTL
        except (InterruptedError, redis.RedisError):
            pass  # Redis is away: they expire
        self.outstanding.close()
        self.redis.close()

    def tick(self) -> None:
        """Now and then: send again the jobs Redis lost; forget jobs of files gone before a restart; sweep
        expired shared blobs."""
        try:
            self._resend_lost()
        except redis.RedisError as exc:
            log.warning("jobs not checked", error=type(exc).__name__)
        if time.time() - self._started > 2 * self.settings.job_timeout:
            for job in self.outstanding.forget_older_than(self._started):
                try:
                    self.blobs.release(job.sha256, job.store, job.job)
                except redis.RedisError:
                    pass  # it expires
        try:
            self.blobs.sweep_shared()
        except OSError:
            pass

    # ------------------------------------------------------------------------------------ judging

    def admit(self, waiting: int) -> int:
        """How many of `waiting` files may begin now (the work queue asks, under its lock): those that keep
        this watcher within `max_outstanding` files in flight, while its snapshot budget has room for a
        file. The rest wait in the queue: backpressure, never a drop."""
        with self._lock:
            room = min(waiting, self.settings.max_outstanding - self._admitted)
            admitted = room if room > 0 and self._budget.has_room() else 0
            self._admitted += admitted
            if admitted < waiting:
                self.counts["waited_for_room"] += 1
            return admitted

    def reserve(self) -> bool:
        """Before an admitted file is read: the largest file there may be, reserved if the budget has room
        (else the file goes back to the queue, `unadmit`)."""
        return self._budget.reserve()

    def read(self, size: int) -> int:
        """A reserved file was read and is in flight: it holds `size` bytes of the budget now."""
        kept = self._budget.shrink(self.largest, size)
        self.reconsider()
        return kept

    def done(self, held: int) -> None:
        """An admitted file is done with (acted on, or never sent): its room and bytes are free."""
        self._budget.release(held)
        with self._lock:
            self._admitted -= 1
        self.reconsider()

    def unadmit(self, count: int) -> None:
        """`count` admitted files were not begun (back in the queue, or in another worker's hands)."""
        with self._lock:
            self._admitted -= count
        self.reconsider()

    def expect(self, request: Request, token: Any) -> None:
        """Give `token` to `deliver` once `request` is answered (now, if it already is)."""
        request.waiter.notify(lambda: self.deliver(token))

    def content_for(self, judge: Judge, watch: str, relpath: str, ruleset: str) -> ContentJudging:
        """What `Judge.judge_name` calls for a file that was read: its content judged on a judge host."""

        def judge_remotely(
            snapshot: Snapshot, name: JudgedName, name_runs: list[DetectorRun]
        ) -> Judgement | Deferred:
            sent = self._content(judge.registry, watch, relpath, ruleset, snapshot)
            if isinstance(sent, Request):
                return Deferred(snapshot, name, name_runs, sent)
            return judge.conclude(snapshot, sent, name, name_runs)

        return judge_remotely

    def _content(
        self, registry: Registry, watch: str, relpath: str, ruleset: str, snapshot: Snapshot
    ) -> Content | Request:
        """The content's verdict when it is known now (the cache, or no way to send it), else its job."""
        exempt = path_exempt(registry, snapshot.display_path)
        store = self.blobs.store_for(len(snapshot.data))
        if store is None:
            self._count("failed")
            return failed(snapshot, "larger than [cluster] blob_max_bytes, and no shared_dir is configured")
        if store == SHARED and not exempt:  # a large file: asked of the cache before it is written out
            key = self.keys.verdict(ruleset, snapshot.sha256)
            content = _decoded(retrying("read the verdict cache", lambda: self.redis.get(key)))
            if content is not None:
                self._count("cache_hits")
                self._forget_inherited(watch, relpath, snapshot.sha256)
                return content
        raw_path = os.fsencode(relpath)
        # the job a killed predecessor sent for this content keeps its id: its verdict, when it comes, is ours
        inherited = self.outstanding.find(watch, raw_path, snapshot.sha256)
        job = inherited.job if inherited is not None else uuid.uuid4().hex
        request = Request(job, watch, ruleset, snapshot, store, exempt, Waiter(), time.monotonic())
        with self._lock:
            self._waiting[job] = request
        try:
            if store == REDIS:  # the cache asked and the job sent in one command, with others' (`sending`)
                cache_key = "" if exempt else self.keys.verdict(ruleset, snapshot.sha256)
                shown = snapshot.display_path if exempt else ""
                fields = self._fields(job, watch, ruleset, snapshot, store, exempt)
                # sent by `send` with the rest of the worker's batch (its outstanding row first)
                request.outgoing = Job(
                    job, snapshot.sha256, snapshot.data, fields, cache_key, shown, raw_path, request.waiter
                )
            else:
                self.outstanding.add(job, watch, raw_path, snapshot.sha256, store)
                request.waiter.entry = self._send(request)
        except BaseException:
            self._finished(request)
            raise
        return request

    def send(self, begun: list[Request], over: list[Request]) -> None:
        """In one round trip from this thread: the jobs of `begun` not yet sent, and the blobs of the
        requests `over` let go (then their outstanding rows)."""
        batch: list[Job | Release] = [request.outgoing for request in begun if request.outgoing is not None]
        for request in begun:
            request.outgoing = None
        batch += [request.release() for request in over]
        self.sender.send_now(batch)

    def outcome(self, request: Request) -> Content | Exception | None:
        """The content's verdict for an answered `request`, or why there is none (the file is then
        unscanned); None when the job went out again (`expect` it again). Once it has one, the request
        is over: `send` lets its blob go."""
        waiter = request.waiter
        try:
            if waiter.error is not None:
                raise waiter.error
            reply = waiter.reply or {}
            if reply.get("cached"):
                content = _decoded(waiter.verdict)
                if content is not None:
                    self._count("cache_hits")
                    self._over(request)
                    return content
                request.waiter.again()  # a cached verdict that cannot be read: judged anew
                self._resend(request, again=False)
                return None
            if reply.get("status") == "blob_missing" and request.resends < MAX_RESENDS:
                request.resends += 1
                self._count("resent")
                request.waiter.again()
                self._resend(request, again=True)
                return None
            content = self._outcome(request.snapshot, waiter)
        except Exception as exc:
            self._over(request)
            return exc
        self._over(request)
        return content

    def _over(self, request: Request) -> None:
        with self._lock:
            self._waiting.pop(request.job, None)

    def _resend(self, request: Request, again: bool) -> None:
        """Its job sent once more, from this thread (`again`: its blob stored anew only if gone)."""
        request.waiter.entry = self._send(request, again=again)
        request.sent_at = time.monotonic()

    def _finished(self, request: Request) -> None:
        """A request given up before its batch was sent: over, and its blob let go by the sender thread."""
        self._over(request)
        self.sender.release(request.release())

    def _resend_lost(self) -> None:
        """Jobs sent over `job_timeout` ago, still unanswered, whose stream entry is gone (Redis lost it):
        sent again."""
        since = time.monotonic() - self.settings.job_timeout
        with self._lock:
            late = [
                r for r in self._waiting.values()
                if r.waiter.entry and not r.waiter.answered and r.sent_at < since
            ]  # fmt: skip
        for request in late:
            if self._alive(request.waiter.entry or ""):
                continue
            self._count("resent")
            self._resend(request, again=True)

    def _send(self, request: Request, again: bool = False) -> str:
        """Store the bytes (the job holds them until it is released) and add the job, from this thread:
        a file in the shared store, or a job sent again."""
        job, snapshot, store, exempt = request.job, request.snapshot, request.store, request.exempt
        fields = self._fields(job, request.watch, request.ruleset, snapshot, store, exempt)

        def send() -> str:
            # One round trip: the blob, the path, the group and the job, in this order (the entry is
            # never there before its blob).
            pipe = self.redis.pipeline(transaction=False)
            if not again or self.blobs.get(snapshot.sha256, store) is None:
                self.blobs.put(snapshot.sha256, snapshot.data, store, job, pipe)
            if exempt:
                pipe.set(self.keys.job_path(job), snapshot.display_path, ex=int(self.settings.blob_ttl))
            # a Redis that lost its data lost the group too ("BUSYGROUP": it is there)
            pipe.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
            pipe.xadd(self.keys.jobs, fields)
            *done, entry = pipe.execute(raise_on_error=False)
            for result in [*done, entry]:
                if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                    raise result
            return entry.decode() if isinstance(entry, bytes) else entry

        self._count("sent")
        return retrying("send a job", send)

    def _fields(
        self, job: str, watch: str, ruleset: str, snapshot: Snapshot, store: str, exempt: bool
    ) -> dict[str, str]:
        """A job's stream entry: ids, the digest, size, sniffed type, watch name, ruleset version and reply
        stream; nothing of the file's contents or name (the path goes in a key of its own, only when it
        matters: `path_exempt`)."""
        return {
            "job": job,
            "sha256": snapshot.sha256,
            "size": str(len(snapshot.data)),
            "type": sniff(snapshot.data[:8192]).name,
            "store": store,
            "watch": watch,
            "ruleset": ruleset,
            "reply": self.reply_stream,
            "exempt": "1" if exempt else "0",
        }

    def _alive(self, entry: str) -> bool:
        try:
            return bool(self.redis.xrange(self.keys.jobs, entry, entry))
        except TRANSIENT:
            return True  # cannot tell: keep waiting

    def _outcome(self, snapshot: Snapshot, waiter: Waiter) -> Content:
        reply = waiter.reply or {}
        if reply.get("status") != "ok":
            self._count("failed")
            reason = reply.get("reason", "no verdict")
            return failed(snapshot, f"no judge could judge it ({reason})")
        raw = waiter.verdict
        if not waiter.fetched:  # the listener could not fetch it with the answer
            key = reply.get("key", "")
            raw = retrying("read a verdict", lambda: self.redis.get(key))
        try:
            if raw is None:
                raise ValueError("verdict expired")
            content = codec.decode(raw)
        except (ValueError, KeyError, TypeError) as exc:
            self._count("failed")
            return failed(snapshot, f"verdict unreadable ({type(exc).__name__})")
        if reply.get("ruleset") and reply.get("ruleset") != reply.get("asked"):
            self._count("ruleset_mismatch")
        self._count("judged")
        return content

    def _forget_inherited(self, watch: str, relpath: str, sha256: str) -> None:
        """A job a killed predecessor sent for this content is answered (from the cache): let its blob go."""
        job = self.outstanding.find(watch, os.fsencode(relpath), sha256)
        if job is not None:
            self.sender.release(Release(job.job, sha256, job.store, exempt=False))

    # ------------------------------------------------------------------------------------ replies

    def _listen(self) -> None:
        """Read this watcher's reply stream: each verdict to the worker waiting for its job; a verdict no
        one waits for (a duplicate, or one for a job of a run before a restart) is dropped by job id."""
        last = "0"
        while not self._stop.is_set():
            try:
                answer = self.redis.xread({self.reply_stream: last}, count=100, block=1000)
            except TRANSIENT:
                last = "0"  # replies handled are deleted: from the start is what is left
                self._stop.wait(0.5)
                continue
            except redis.RedisError as exc:
                log.error("reading verdicts failed", error=type(exc).__name__)
                self._stop.wait(1.0)
                continue
            handled: list[str] = []
            answered: list[tuple[Waiter, dict[str, str]]] = []
            for _stream, entries in answer or ():
                for entry_id, raw in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    handled.append(last)
                    fields = {_text(k): _text(v) for k, v in raw.items()}
                    with self._lock:
                        request = self._waiting.get(fields.get("job", ""))
                        waiter = request.waiter if request is not None else None
                        if waiter is None or waiter.answered:
                            self.counts["duplicates"] += 1
                            continue
                    answered.append((waiter, fields))
            self._deliver(answered, handled)

    def _deliver(self, answered: list[tuple[Waiter, dict[str, str]]], handled: list[str]) -> None:
        """Each answer to its file in flight, with its verdict fetched for it: one round trip for the
        verdicts of a whole read and the deletion of its replies."""
        keys = [fields["key"] for _, fields in answered if fields.get("status") == "ok" and fields.get("key")]
        verdicts: dict[str, Any] = {}
        try:
            pipe = self.redis.pipeline(transaction=False)
            if keys:
                pipe.mget(keys)
            if handled:
                pipe.xdel(self.reply_stream, *handled)
            results = pipe.execute(raise_on_error=False) if keys or handled else []
            if keys and isinstance(results[0], list):
                verdicts = dict(zip(keys, results[0], strict=True))
        except redis.RedisError:
            pass  # each file's verdict is read when it is finished; the replies are read from the start again
        for waiter, fields in answered:
            key = fields.get("key", "")
            if key in verdicts:
                waiter.answer(fields, verdicts[key], fetched=True)
            else:
                waiter.answer(fields)

    # ------------------------------------------------------------------------------------ counts

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1
            if key in ("sent", "judged", "cache_hits", "failed"):
                self._last_progress = time.monotonic()

    def stats(self) -> dict[str, Any]:
        """Counts for STATUS and metrics: this watcher's (outstanding, sent, ...) and the cluster's
        (queued, in flight, redelivered, dead-lettered, judged, judge rate per second)."""
        with self._lock:
            mine: dict[str, Any] = dict(self.counts)
            mine["outstanding"] = len(self._waiting)
        mine["node"] = self.node
        try:
            mine.update(cluster_counts(self.redis, self.keys))
            now = time.monotonic()
            self._judged_samples.append((now, int(mine["judged_total"])))
            old = next((s for s in self._judged_samples if now - s[0] <= 60), self._judged_samples[-1])
            span = now - old[0]
            mine["judge_rate"] = round((mine["judged_total"] - old[1]) / span, 3) if span > 0 else 0.0
            mine["redis"] = "ok"
        except redis.RedisError as exc:
            mine["redis"] = f"unavailable ({type(exc).__name__})"
        return mine


def cluster_counts(r: redis.Redis, keys: Keys) -> dict[str, int]:
    """The cluster's backlog: jobs not yet read by a judge, read but not acknowledged, and totals."""
    queued = in_flight = 0
    try:
        for group in r.xinfo_groups(keys.jobs):
            if _text(group.get("name", b"")) == GROUP:
                in_flight = int(group.get("pending") or 0)
                queued = int(group.get("lag") or 0)
    except redis.ResponseError:
        pass  # no stream yet
    totals = {_text(k): int(v) for k, v in (r.hgetall(keys.stats) or {}).items()}
    return {
        "queued": queued,
        "in_flight": in_flight,
        "redelivered": totals.get("redelivered", 0),
        "dead_lettered": totals.get("dead_lettered", 0),
        "judged_total": totals.get("judged", 0),
    }


def failed(snapshot: Snapshot, detail: str) -> Content:
    """Content for a file no judge could judge: unscanned, reason judge_failed (the watch's policy acts)."""
    return Content(sniff(snapshot.data[:8192]), [Problem(Reason.JUDGE_FAILED, detail, "cluster")], [], None)


def _decoded(raw: bytes | None) -> Content | None:
    """A cached verdict's content; None when there is none or it cannot be read (then judged anew)."""
    if raw is None:
        return None
    try:
        return codec.decode(raw)
    except (ValueError, KeyError, TypeError):
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
