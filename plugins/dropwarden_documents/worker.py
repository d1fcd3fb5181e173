"""Parser worker processes: resource limits, a wall-time per file, recycled after N files or any failure.

Why processes from a forkserver, through a pipe of our own rather than a `ProcessPoolExecutor`: the
daemon is multi-threaded, so workers must not be forked from it (forkserver forks them from a clean,
single-threaded server that has preloaded the parsers once: no interpreter start per worker); and a hung
or crashed parse must cost exactly one worker, killed by us, while a pool executor can neither kill one
worker nor survive one dying (it breaks the whole pool).
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import resource
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from dropwarden_documents.settings import DocumentsSettings
from dropwarden_documents.walk import Outcome

DEFAULT_JOB = "dropwarden_documents.formats:walk"
_START_TIMEOUT = 30.0


class WorkerFailed(Exception):
    """A file's parse ended without an answer: `reason` is a `dropwarden.verdict.Reason` value."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _serve(conn: Connection, job: str, limits: dict[str, Any]) -> None:
    """The worker's loop: limits first, then one (data, settings) request at a time, answered with
    ("ok", Outcome) or ("memory", detail); None ends it."""
    settings = DocumentsSettings.model_validate(limits)
    memory = int(settings.worker_memory)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    files = settings.worker_open_files
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    module, _, name = job.partition(":")
    function = getattr(importlib.import_module(module), name)
    # What the worker holds before its first file (the preloaded parsers: tens of thousands of objects)
    # is never garbage: kept out of every collection, a small file no longer pays for scanning it.
    gc.freeze()
    while True:
        request = conn.recv()
        if request is None:
            return
        used = resource.getrusage(resource.RUSAGE_SELF)
        spent = int(used.ru_utime + used.ru_stime) + 1
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        resource.setrlimit(resource.RLIMIT_CPU, (spent + settings.worker_cpu_seconds, hard))
        try:
            answer: tuple[str, Any] = ("ok", function(request, settings))
        except MemoryError:
            answer = ("memory", f"over documents.worker_memory={memory} bytes")
        except Exception as exc:  # a parser bug: the type only, a message may quote the content
            answer = ("error", f"parser failed ({type(exc).__name__})")
        conn.send(answer)
        if answer[0] != "ok":
            return


class _Worker:
    def __init__(self, context: Any, job: str, limits: dict[str, Any]) -> None:
        parent, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, job, limits), daemon=True)
        self.process.start()
        child.close()
        self.conn: Connection = parent
        self.files = 0

    def stop(self) -> None:
        """Kill it (a worker is never trusted to exit by itself) and reap it."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def how_it_ended(self) -> tuple[str, str]:
        self.process.join(1)
        code = self.process.exitcode
        if code is not None and code < 0:
            signame = signal.Signals(-code).name
            if -code == signal.SIGXCPU:
                return "timeout", "parser worker over documents.worker_cpu_seconds (SIGXCPU)"
            return "detector_error", f"parser worker killed by {signame}"
        return "detector_error", f"parser worker exited ({code})"


class WorkerPool:
    """At most `workers` parses at a time, each in a worker process of its own; `run` never raises
    anything but WorkerFailed for what a worker did."""

    def __init__(self, limits: DocumentsSettings, job: str = DEFAULT_JOB) -> None:
        self.limits = limits
        self.job = job
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([job.partition(":")[0]])
        self._limits = limits.model_dump(mode="json")
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(limits.workers)
        self.started = 0  # workers started so far (tests read it)

    def run(self, data: bytes) -> Outcome:
        """The job's outcome for `data`, within documents.file_timeout of wall time."""
        with self._slots:
            worker = self._take()
            try:
                worker.conn.send(data)
                deadline = time.monotonic() + self.limits.file_timeout
                if not worker.conn.poll(max(0.0, deadline - time.monotonic())):
                    worker.stop()
                    raise WorkerFailed(
                        "timeout", f"no answer within documents.file_timeout={self.limits.file_timeout:g}s"
                    )
                status, value = worker.conn.recv()
            except (EOFError, OSError):
                reason, detail = worker.how_it_ended()
                worker.stop()
                raise WorkerFailed(reason, detail) from None
            if status != "ok":
                worker.stop()
                raise WorkerFailed("too_large" if status == "memory" else "detector_error", str(value))
            self._give_back(worker)
            return value

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self.started += 1
        return _Worker(self._context, self.job, self._limits)

    def _give_back(self, worker: _Worker) -> None:
        worker.files += 1
        if worker.files >= self.limits.worker_max_files:
            worker.stop()  # recycled: whatever a parser leaked goes with it
            return
        with self._lock:
            self._idle.append(worker)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()
