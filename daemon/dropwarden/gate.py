"""GPU gate: named resources with capacities, host-wide slots as flock'ed lock files, NVML memory checks."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import random
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dropwarden.config import GpuSettings

DIR_MODE = 0o750
FILE_MODE = 0o640
# A waiter that has waited this long takes the resource's turnstile: no new holder may enter while it
# collects its slots one by one, so a heavy job is not starved by a stream of light ones.
DRAIN_AFTER = 0.25
_BACKOFF_FIRST = 0.002
_BACKOFF_MAX = 0.05
_BACKOFF_MAX_DRAINING = 0.01
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


class GateError(Exception):
    """The gate cannot be used: an unsafe lock directory or lock file, or the system refused it."""


class GateTimeout(GateError, TimeoutError):
    """The slots were not free within the timeout; nothing was taken."""


class Held:
    """Slots of one resource held by this process until `release()` (or the end of the `with` block)."""

    def __init__(
        self, gate: Gate, resource: str, weight: int, fds: list[int], slots: list[int], waited: float
    ):
        self.resource = resource
        self.weight = weight
        self.slots = tuple(slots)
        self.waited = waited
        self._gate = gate
        self._fds = fds
        self._lock = threading.Lock()

    @property
    def released(self) -> bool:
        return not self._fds

    def release(self) -> None:
        """Give the slots back; idempotent."""
        with self._lock:
            fds, self._fds = self._fds, []
        if not fds:
            return
        _close_all(fds)
        self._gate._released(self.resource, self.weight)

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self.released else "held"
        return f"<Held {self.resource} weight={self.weight} slots={list(self.slots)} {state}>"


class Gate:
    """Named resources with capacities; a job holds `weight` slots of a resource, host-wide.

    A slot is the file `<lock_dir>/<resource>.<index>.lock` locked with `flock` on an open file description
    of its own, so holders in one process exclude each other as holders in different processes do, and the
    kernel frees the slots of a holder that dies, even by SIGKILL. A forked child (without exec) shares its
    parent's descriptions: the slot stays taken until both let go.
    """

    def __init__(self, lock_dir: Path | str, capacities: Mapping[str, int]):
        for name, capacity in capacities.items():
            if not name or "/" in name or name in (".", "..") or "\0" in name:
                raise ValueError(f"invalid resource name {name!r}")
            if not isinstance(capacity, int) or capacity < 1:
                raise ValueError(f"resource {name!r} needs a capacity of at least 1, not {capacity!r}")
        self.lock_dir = Path(lock_dir)
        self._capacities = dict(capacities)
        self._lock = threading.Lock()
        self._stats = {name: {"waiting": 0, "in_flight": 0, "waits": 0} for name in self._capacities}
        self._released_cond = {name: threading.Condition(self._lock) for name in self._capacities}
        self._generation = dict.fromkeys(self._capacities, 0)

    @classmethod
    def from_settings(cls, settings: GpuSettings) -> Gate:
        return cls(settings.lock_dir, settings.resources)

    @property
    def capacities(self) -> dict[str, int]:
        return dict(self._capacities)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per resource, for this process: jobs waiting now, slots held now, acquisitions that had to wait."""
        with self._lock:
            return {name: dict(counts) for name, counts in self._stats.items()}

    def acquire(self, resource: str, weight: int = 1, timeout: float | None = None) -> Held:
        """Take `weight` slots of `resource`, all or nothing, waiting up to `timeout` s (None: forever)."""
        attempt = self._attempt(resource, weight, timeout)
        try:
            if attempt.step():
                return self._acquired(attempt)
            attempt.check_deadline()
            self._waiting(resource, +1)
            try:
                while True:
                    generation = self._generation[resource]
                    if attempt.step():
                        return self._acquired(attempt)
                    delay = attempt.next_delay()
                    with self._released_cond[resource]:
                        if generation == self._generation[resource]:
                            self._released_cond[resource].wait(delay)
            finally:
                self._waiting(resource, -1)
        except BaseException:
            attempt.abort()
            raise

    async def acquire_async(self, resource: str, weight: int = 1, timeout: float | None = None) -> Held:
        """`acquire` for asyncio: polls without blocking the loop; cancellation gives back what was taken."""
        attempt = self._attempt(resource, weight, timeout)
        try:
            if attempt.step():
                return self._acquired(attempt)
            attempt.check_deadline()
            self._waiting(resource, +1)
            try:
                while True:
                    if attempt.step():
                        return self._acquired(attempt)
                    await asyncio.sleep(attempt.next_delay())
            finally:
                self._waiting(resource, -1)
        except BaseException:
            attempt.abort()
            raise

    @contextlib.contextmanager
    def hold(self, resource: str, weight: int = 1, timeout: float | None = None) -> Iterator[Held]:
        held = self.acquire(resource, weight, timeout)
        try:
            yield held
        finally:
            held.release()

    @contextlib.asynccontextmanager
    async def hold_async(
        self, resource: str, weight: int = 1, timeout: float | None = None
    ) -> AsyncIterator[Held]:
        held = await self.acquire_async(resource, weight, timeout)
        try:
            yield held
        finally:
            held.release()

    # internals

    def _attempt(self, resource: str, weight: int, timeout: float | None) -> _Attempt:
        capacity = self._capacities.get(resource)
        if capacity is None:
            raise ValueError(f"unknown gate resource {resource!r}; configured: {sorted(self._capacities)}")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise ValueError(f"weight must be a positive integer, not {weight!r}")
        if weight > capacity:
            raise ValueError(f"weight {weight} exceeds the capacity {capacity} of {resource!r}")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        return _Attempt(self._open_dir(), resource, capacity, weight, deadline, timeout)

    def _open_dir(self) -> int:
        path = self.lock_dir
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, DIR_MODE)
            st = os.lstat(path)
        except OSError as exc:
            raise GateError(f"gate lock directory {path}: {exc.strerror}") from exc
        if stat.S_ISLNK(st.st_mode):
            raise GateError(f"gate lock directory {path} is a symlink; refusing it")
        try:
            fd = os.open(path, _DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):  # swapped since lstat
                raise GateError(f"gate lock directory {path} is a symlink; refusing it") from exc
            raise GateError(f"gate lock directory {path}: {exc.strerror}") from exc
        st = os.fstat(fd)
        if st.st_mode & stat.S_IWOTH:
            os.close(fd)
            raise GateError(f"gate lock directory {path} is writable by anyone; refusing it")
        return fd

    def _acquired(self, attempt: _Attempt) -> Held:
        fds, slots = attempt.take()
        with self._lock:
            self._stats[attempt.resource]["in_flight"] += attempt.weight
        return Held(self, attempt.resource, attempt.weight, fds, slots, time.monotonic() - attempt.started)

    def _waiting(self, resource: str, delta: int) -> None:
        with self._lock:
            counts = self._stats[resource]
            counts["waiting"] += delta
            if delta > 0:
                counts["waits"] += 1

    def _released(self, resource: str, weight: int) -> None:
        with self._released_cond[resource]:
            self._stats[resource]["in_flight"] -= weight
            self._generation[resource] += 1
            self._released_cond[resource].notify_all()


class _Attempt:
    """One acquisition in progress: the open lock directory, the slots taken so far, the turnstile."""

    def __init__(
        self,
        dir_fd: int,
        resource: str,
        capacity: int,
        weight: int,
        deadline: float | None,
        timeout: float | None,
    ):
        self.dir_fd = dir_fd
        self.resource = resource
        self.capacity = capacity
        self.weight = weight
        self.deadline = deadline
        self.timeout = timeout
        self.started = time.monotonic()
        self.fds: list[int] = []
        self.slots: list[int] = []
        self.turnstile: int | None = None
        self.draining = False
        self.tries = 0

    def step(self) -> bool:
        """One try without blocking; True once all `weight` slots are held."""
        self.tries += 1
        if self.draining:
            return self._collect()
        turnstile = self._turnstile()
        if _try_flock(turnstile, fcntl.LOCK_SH):
            try:
                if self._collect():
                    return True
                self._drop_slots()
            finally:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        if time.monotonic() - self.started >= DRAIN_AFTER and _try_flock(turnstile, fcntl.LOCK_EX):
            self.draining = True
            return self._collect()
        return False

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise GateTimeout(
                f"gate resource {self.resource!r}: {self.weight} slot(s) not free within {self.timeout}s"
            )

    def next_delay(self) -> float:
        """Raise GateTimeout past the deadline, else how long to sleep before the next try (with jitter)."""
        self.check_deadline()
        ceiling = _BACKOFF_MAX_DRAINING if self.draining else _BACKOFF_MAX
        delay = min(ceiling, _BACKOFF_FIRST * 2 ** min(self.tries, 8)) * random.uniform(0.5, 1.0)
        if self.deadline is not None:
            delay = min(delay, max(0.0, self.deadline - time.monotonic()))
        return delay

    def take(self) -> tuple[list[int], list[int]]:
        """Hand the slots over to the holder and let go of everything else."""
        fds, slots = self.fds, self.slots
        self.fds, self.slots = [], []
        self.abort()
        return fds, slots

    def abort(self) -> None:
        self._drop_slots()
        fds = [fd for fd in (self.turnstile, self.dir_fd) if fd is not None and fd >= 0]
        self.turnstile, self.dir_fd = None, -1
        _close_all(fds)

    def _collect(self) -> bool:
        for index in range(self.capacity):
            if len(self.fds) == self.weight:
                break
            if index in self.slots:
                continue
            fd = self._open(f"{self.resource}.{index}.lock")
            if _try_flock(fd, fcntl.LOCK_EX):
                self.fds.append(fd)
                self.slots.append(index)
            else:
                os.close(fd)
        return len(self.fds) == self.weight

    def _drop_slots(self) -> None:
        fds = self.fds
        self.fds, self.slots = [], []
        _close_all(fds)

    def _turnstile(self) -> int:
        if self.turnstile is None:
            self.turnstile = self._open(f"{self.resource}.turnstile")
        return self.turnstile

    def _open(self, name: str) -> int:
        try:
            fd = os.open(name, _FILE_FLAGS, FILE_MODE, dir_fd=self.dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise GateError(f"gate lock file {name} is a symlink; refusing it") from exc
            raise GateError(f"gate lock file {name}: {exc.strerror}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise GateError(f"gate lock file {name} is not a regular file; refusing it")
        return fd


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _close_all(fds: list[int]) -> None:
    """Unlock and close; LOCK_UN first so that a copy inherited by a forked child does not keep the slot."""
    for fd in fds:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)


_gates: dict[tuple[str, tuple[tuple[str, int], ...]], Gate] = {}
_gates_lock = threading.Lock()


def get_gate(settings: GpuSettings) -> Gate:
    """The process-wide gate for these settings, so the daemon's metrics and the detectors share counts."""
    key = (str(settings.lock_dir), tuple(sorted(settings.resources.items())))
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = Gate.from_settings(settings)
        return gate


def _forget_gates_in_child() -> None:
    # A forked child must not report its parent's counts, nor find a lock copied while some thread held it.
    global _gates_lock
    _gates_lock = threading.Lock()
    _gates.clear()


os.register_at_fork(after_in_child=_forget_gates_in_child)


def free_gpu_memory_mib(device_index: int = 0) -> int | None:
    """Free memory of a GPU in MiB according to NVML; None when NVML (nvidia-ml-py) or the GPU is absent."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError (no driver, no library) or OSError from loading libnvidia-ml
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free) // (1024 * 1024)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def check_gpu_memory(required_mib: int, device_index: int = 0) -> str | None:
    """A reason not to load when NVML reports less than `required_mib` free on the device, else None.

    Without NVML there is nothing to check against: None, and loading may still fail on its own.
    """
    if required_mib <= 0:
        return None
    free = free_gpu_memory_mib(device_index)
    if free is None or free >= required_mib:
        return None
    return f"GPU {device_index} has {free} MiB free; {required_mib} MiB required"
