"""The GPU gate: capacity is never exceeded, dead holders free their slots, waits are counted, NVML checks."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dropwarden import gate as gate_module
from dropwarden.config import GpuSettings
from dropwarden.gate import (
    DRAIN_AFTER,
    Gate,
    GateError,
    GateTimeout,
    check_gpu_memory,
    free_gpu_memory_mib,
    get_gate,
)

REPO = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "daemon"), env.get("PYTHONPATH")]))
    return env


def locked_slots(lock_dir: Path, resource: str, capacity: int) -> list[int]:
    """Slots that someone holds, seen from a fresh open file description (as another process would)."""
    locked = []
    for index in range(capacity):
        if _is_locked(lock_dir / f"{resource}.{index}.lock"):
            locked.append(index)
    return locked


def _is_locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


# -- never more holders than capacity ---------------------------------------------------------------

BURST_WORKER = textwrap.dedent(
    """
    import os, random, sys, threading, time
    from dropwarden.gate import Gate

    lock_dir, log_path, capacity, threads, jobs, seed = sys.argv[1:7]
    gate = Gate(lock_dir, {"burst": int(capacity)})
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    errors = []

    def work(rng):
        try:
            for _ in range(int(jobs)):
                weight = rng.choice([1, 1, 2, int(capacity)])
                with gate.hold("burst", weight, timeout=30):
                    os.write(log, f"+{weight} {os.getpid()}\\n".encode())
                    time.sleep(rng.uniform(0.001, 0.004))
                    os.write(log, f"-{weight} {os.getpid()}\\n".encode())
        except BaseException as exc:
            errors.append(exc)

    print("ready", flush=True)
    sys.stdin.readline()
    workers = [threading.Thread(target=work, args=(random.Random(f"{seed}-{i}"),)) for i in range(int(threads))]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if errors:
        sys.exit(f"worker failed: {errors[0]!r}")
    """
)


def test_burst_of_threads_and_processes_never_exceeds_capacity(tmp_path: Path) -> None:
    capacity, procs, threads, jobs = 3, 3, 3, 8
    lock_dir, log_path = tmp_path / "gate", tmp_path / "holders.log"
    log_path.touch()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", BURST_WORKER, *map(str, (lock_dir, log_path, capacity, threads, jobs, n))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for n in range(procs)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        gate = Gate(lock_dir, {"burst": capacity})
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
        errors: list[BaseException] = []

        def work(rng: random.Random) -> None:
            try:
                for _ in range(jobs):
                    weight = rng.choice([1, 1, 2, capacity])
                    with gate.hold("burst", weight, timeout=30):
                        os.write(log, f"+{weight} {os.getpid()}\n".encode())
                        time.sleep(rng.uniform(0.001, 0.004))
                        os.write(log, f"-{weight} {os.getpid()}\n".encode())
            except BaseException as exc:
                errors.append(exc)

        local = [threading.Thread(target=work, args=(random.Random(i),)) for i in range(2 * threads)]
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        for thread in local:
            thread.start()
        for thread in local:
            thread.join()
        for child in children:
            assert child.wait(timeout=60) == 0
        os.close(log)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert not errors, errors

    load, peak, entered, mixed = 0, 0, 0, False
    holders: dict[str, int] = {}
    for line in log_path.read_text().splitlines():
        sign_weight, pid = line.split()
        weight = int(sign_weight[1:])
        if sign_weight[0] == "+":
            entered += 1
            load += weight
            holders[pid] = holders.get(pid, 0) + 1
            mixed = mixed or len(holders) > 1
        else:
            load -= weight
            holders[pid] -= 1
            if not holders[pid]:
                del holders[pid]
        assert load <= capacity, f"{load} slots held at once with capacity {capacity}"
        peak = max(peak, load)
    assert load == 0
    assert entered == (procs * threads + 2 * threads) * jobs, "every job completes"
    assert peak == capacity, "the burst did fill the gate"
    assert mixed, "holders of different processes were inside at the same time"
    assert gate.stats()["burst"] == {"waiting": 0, "in_flight": 0, "waits": gate.stats()["burst"]["waits"]}
    assert gate.stats()["burst"]["waits"] > 0


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=5),
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(min_value=0, max_value=9), st.integers(1, 5)), max_size=30
    ),
)
def test_acquisitions_succeed_exactly_when_the_slots_are_free(capacity: int, ops: list) -> None:
    """Two gates on one lock dir (as two processes would be): a try succeeds iff weight <= free slots."""
    with tempfile.TemporaryDirectory() as tmp:
        lock_dir = Path(tmp) / "gate"
        gates = [Gate(lock_dir, {"r": capacity}), Gate(lock_dir, {"r": capacity})]
        held = []
        for acquire, which, weight in ops:
            if acquire:
                weight = min(weight, capacity)
                free = capacity - sum(h.weight for h in held)
                try:
                    held.append(gates[which % 2].acquire("r", weight, timeout=0))
                except GateTimeout:
                    assert weight > free
                else:
                    assert weight <= free
            elif held:
                held.pop(which % len(held)).release()
            assert len(locked_slots(lock_dir, "r", capacity)) == sum(h.weight for h in held)
            for index, g in enumerate(gates):
                mine = sum(h.weight for h in held if h._gate is g)
                assert g.stats()["r"]["in_flight"] == mine, index
        for h in held:
            h.release()
        assert locked_slots(lock_dir, "r", capacity) == []


def test_a_heavy_job_is_not_starved_by_a_stream_of_light_ones(tmp_path: Path) -> None:
    """Staggered light holders leave no moment with every slot free; the heavy job still gets in."""
    capacity = 3
    gate = Gate(tmp_path / "gate", {"gpu0": capacity})
    stop = threading.Event()

    def light(delay: float) -> None:
        time.sleep(delay)
        while not stop.is_set():
            with gate.hold("gpu0", 1, timeout=10):
                time.sleep(0.02)

    streams = [threading.Thread(target=light, args=(0.007 * i,)) for i in range(2 * capacity)]
    for thread in streams:
        thread.start()
    try:
        time.sleep(0.05)
        with gate.hold("gpu0", capacity, timeout=DRAIN_AFTER + 1) as held:
            assert sorted(held.slots) == list(range(capacity))
    finally:
        stop.set()
        for thread in streams:
            thread.join()


# -- a killed holder frees its slots ------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from dropwarden.gate import Gate

    gate = Gate(sys.argv[1], {"gpu0": 2})
    with gate.hold("gpu0", 2, timeout=10):
        print("held", flush=True)
        time.sleep(120)
    """
)


def test_a_sigkilled_holder_frees_its_slots(tmp_path: Path) -> None:
    lock_dir = tmp_path / "gate"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_dir)], stdout=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert child.stdout.readline().strip() == "held"
        gate = Gate(lock_dir, {"gpu0": 2})
        with pytest.raises(GateTimeout):
            gate.acquire("gpu0", 1, timeout=0.2)

        got: list[float] = []
        waiter = threading.Thread(target=lambda: got.append(_time_acquire(gate)))
        waiter.start()
        wait_for(lambda: gate.stats()["gpu0"]["waiting"] == 1)
        killed = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        waiter.join(timeout=10)
        assert child.returncode == -signal.SIGKILL
        assert got and got[0] - killed < 1.0, "the waiter got the slots promptly"
        assert gate.stats()["gpu0"] == {"waiting": 0, "in_flight": 0, "waits": 2}
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _time_acquire(gate: Gate) -> float:
    with gate.hold("gpu0", 2, timeout=10):
        return time.monotonic()


# -- counters --------------------------------------------------------------------------------------------


def test_stats_have_the_shape_the_metrics_collector_reads(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate", {"gpu0": 2, "vision-endpoint": 16})
    empty = {"waiting": 0, "in_flight": 0, "waits": 0}
    assert gate.stats() == {"gpu0": empty, "vision-endpoint": empty}
    with gate.hold("vision-endpoint", 3):
        assert gate.stats() == {"gpu0": empty, "vision-endpoint": {"waiting": 0, "in_flight": 3, "waits": 0}}
    stats = gate.stats()
    stats["gpu0"]["waits"] = 99
    assert gate.stats()["gpu0"]["waits"] == 0, "stats() is a copy"


def test_waits_are_counted(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate", {"gpu0": 1})
    first = gate.acquire("gpu0")
    assert gate.stats()["gpu0"] == {"waiting": 0, "in_flight": 1, "waits": 0}, "no wait when free"

    done = threading.Event()
    results: list[object] = []

    def second() -> None:
        with gate.hold("gpu0", timeout=10) as held:
            results.append(held.waited)
            done.wait(10)

    waiters = [threading.Thread(target=second) for _ in range(2)]
    for thread in waiters:
        thread.start()
    wait_for(lambda: gate.stats()["gpu0"]["waiting"] == 2)
    time.sleep(0.1)
    assert gate.stats()["gpu0"] == {"waiting": 2, "in_flight": 1, "waits": 2}, "one wait per job, not per try"
    first.release()
    wait_for(lambda: gate.stats()["gpu0"]["in_flight"] == 1 and gate.stats()["gpu0"]["waiting"] == 1)
    done.set()
    for thread in waiters:
        thread.join(10)
    assert gate.stats()["gpu0"] == {"waiting": 0, "in_flight": 0, "waits": 2}
    assert len(results) == 2 and all(w >= 0.1 for w in results)

    with pytest.raises(GateTimeout), gate.hold("gpu0"), gate.hold("gpu0", timeout=0.05):
        pass
    assert gate.stats()["gpu0"] == {"waiting": 0, "in_flight": 0, "waits": 3}, "a timed-out wait is a wait"


# -- timeouts and refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, 0.1, DRAIN_AFTER + 0.3])
def test_a_timeout_takes_nothing(tmp_path: Path, timeout: float) -> None:
    lock_dir = tmp_path / "gate"
    gate, other = Gate(lock_dir, {"gpu0": 3}), Gate(lock_dir, {"gpu0": 3})
    with other.hold("gpu0", 2) as held:
        started = time.monotonic()
        with pytest.raises(GateTimeout) as raised:
            gate.acquire("gpu0", 2, timeout=timeout)
        assert isinstance(raised.value, TimeoutError)
        assert timeout <= time.monotonic() - started < timeout + 0.5
        assert locked_slots(lock_dir, "gpu0", 3) == sorted(held.slots), "the free slot is still free"
        assert not _is_locked(lock_dir / "gpu0.turnstile"), "no turnstile left behind"
        assert gate.stats()["gpu0"]["in_flight"] == 0
        assert gate.stats()["gpu0"]["waiting"] == 0
        with gate.hold("gpu0", 1, timeout=0):
            pass


def test_weights_are_checked(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate", {"gpu0": 2})
    for weight in (3, 0, -1, True):
        with pytest.raises(ValueError):
            gate.acquire("gpu0", weight, timeout=0)
    with pytest.raises(ValueError):
        gate.acquire("gpu1", timeout=0)
    with pytest.raises(ValueError):
        Gate(tmp_path / "gate", {"gpu0": 0})
    with pytest.raises(ValueError):
        Gate(tmp_path / "gate", {"../x": 1})
    assert locked_slots(tmp_path / "gate", "gpu0", 2) == []


def test_a_symlinked_lock_dir_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o750)
    (tmp_path / "link").symlink_to(real)
    gate = Gate(tmp_path / "link", {"gpu0": 1})
    with pytest.raises(GateError, match="is a symlink"):
        gate.acquire("gpu0")
    assert list(real.iterdir()) == []


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    lock_dir = tmp_path / "gate"
    lock_dir.mkdir(mode=0o750)
    target = tmp_path / "elsewhere"
    (lock_dir / "gpu0.0.lock").symlink_to(target)
    with pytest.raises(GateError, match="is a symlink"):
        Gate(lock_dir, {"gpu0": 1}).acquire("gpu0")
    assert not target.exists()


def test_a_world_writable_lock_dir_is_refused(tmp_path: Path) -> None:
    lock_dir = tmp_path / "gate"
    lock_dir.mkdir()
    lock_dir.chmod(0o777)
    with pytest.raises(GateError, match="writable"):
        Gate(lock_dir, {"gpu0": 1}).acquire("gpu0")


def test_lock_dir_and_files_are_created_private(tmp_path: Path) -> None:
    lock_dir = tmp_path / "run" / "gate"
    old = os.umask(0)
    try:
        with Gate(lock_dir, {"gpu0": 2}).hold("gpu0", 2):
            pass
    finally:
        os.umask(old)
    assert lock_dir.stat().st_mode & 0o7777 == 0o750
    names = sorted(p.name for p in lock_dir.iterdir())
    assert names == ["gpu0.0.lock", "gpu0.1.lock", "gpu0.turnstile"]
    assert {(lock_dir / n).stat().st_mode & 0o7777 for n in names} == {0o640}


# -- asyncio -----------------------------------------------------------------------------------------------


def test_hold_async_holds_and_releases(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate", {"gpu0": 2})

    async def main() -> None:
        async with gate.hold_async("gpu0", 2, timeout=1) as held:
            assert sorted(held.slots) == [0, 1]
            assert gate.stats()["gpu0"]["in_flight"] == 2
            with pytest.raises(GateTimeout):
                async with gate.hold_async("gpu0", 1, timeout=0.05):
                    pass
        assert locked_slots(tmp_path / "gate", "gpu0", 2) == []
        async with gate.hold_async("gpu0", 1, timeout=0):
            pass

    asyncio.run(main())
    assert gate.stats()["gpu0"] == {"waiting": 0, "in_flight": 0, "waits": 1}


@pytest.mark.parametrize("wait", [0.05, DRAIN_AFTER + 0.2])
def test_hold_async_cancelled_while_waiting_gives_back_what_it_took(tmp_path: Path, wait: float) -> None:
    lock_dir = tmp_path / "gate"
    gate = Gate(lock_dir, {"gpu0": 2})
    entered = []

    async def job() -> None:
        async with gate.hold_async("gpu0", 2):
            entered.append(True)

    async def main() -> None:
        with gate.hold("gpu0", 1) as sync_holder:
            task = asyncio.create_task(job())
            await asyncio.sleep(wait)
            assert gate.stats()["gpu0"]["waiting"] == 1
            if wait > DRAIN_AFTER:
                assert len(locked_slots(lock_dir, "gpu0", 2)) == 2, "draining: it holds the free slot"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert locked_slots(lock_dir, "gpu0", 2) == list(sync_holder.slots)
            assert not _is_locked(lock_dir / "gpu0.turnstile")
        assert locked_slots(lock_dir, "gpu0", 2) == []

    asyncio.run(main())
    assert not entered
    assert gate.stats()["gpu0"] == {"waiting": 0, "in_flight": 0, "waits": 1}


def test_hold_async_cancelled_while_holding_releases(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate", {"gpu0": 1})

    async def job(ready: asyncio.Event) -> None:
        async with gate.hold_async("gpu0"):
            ready.set()
            await asyncio.sleep(60)

    async def main() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(job(ready))
        await ready.wait()
        assert locked_slots(tmp_path / "gate", "gpu0", 1) == [0]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert locked_slots(tmp_path / "gate", "gpu0", 1) == []
    assert gate.stats()["gpu0"]["in_flight"] == 0


# -- the process-wide instance ---------------------------------------------------------------------------


def test_get_gate_is_one_instance_per_settings(tmp_path: Path) -> None:
    one = GpuSettings(lock_dir=tmp_path / "a", resources={"gpu0": 2})
    same = GpuSettings(lock_dir=tmp_path / "a", resources={"gpu0": 2})
    other = GpuSettings(lock_dir=tmp_path / "a", resources={"gpu0": 3})
    assert get_gate(one) is get_gate(same)
    assert get_gate(one) is not get_gate(other)
    assert get_gate(other).capacities == {"gpu0": 3}
    assert Gate.from_settings(one).lock_dir == tmp_path / "a"


# -- NVML ------------------------------------------------------------------------------------------------------


def fake_nvml(free_mib: int | None = None, init_error: bool = False) -> types.SimpleNamespace:
    calls: list[str] = []

    class NVMLError(Exception):
        pass

    def init() -> None:
        calls.append("init")
        if init_error:
            raise NVMLError("Driver Not Loaded")

    def handle(index: int) -> int:
        if free_mib is None:
            raise NVMLError("Invalid Argument")
        return index

    return types.SimpleNamespace(
        calls=calls,
        NVMLError=NVMLError,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetHandleByIndex=handle,
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(free=free_mib * 1024 * 1024, total=0, used=0),
    )


def test_free_gpu_memory_without_nvml_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert free_gpu_memory_mib() is None
    assert check_gpu_memory(10_000) is None


def test_free_gpu_memory_without_driver_or_device_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    for nvml, calls in (
        (fake_nvml(init_error=True), ["init"]),
        (fake_nvml(free_mib=None), ["init", "shutdown"]),
    ):
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        assert free_gpu_memory_mib() is None
        assert check_gpu_memory(10_000) is None
        assert nvml.calls == calls + calls


def test_gpu_memory_check_uses_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml(free_mib=5000)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert free_gpu_memory_mib(0) == 5000
    assert nvml.calls == ["init", "shutdown"]
    assert check_gpu_memory(4000) is None
    assert check_gpu_memory(0) is None
    reason = check_gpu_memory(6000)
    assert reason is not None and "5000" in reason and "6000" in reason


def test_the_module_docstring_is_one_line() -> None:
    assert gate_module.__doc__ and "\n" not in gate_module.__doc__.strip()
