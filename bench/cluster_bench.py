"""Cluster benchmark: files/s and latency as users see them, one process (`role = "all"`) vs a watcher and
1, 2, 4 judge processes on Redis Streams.

    .venv/bin/python bench/cluster_bench.py [--case regex,vision] [--judges 1,2,4] [--seconds 15] [--json]

Every setup gets a fresh temporary directory: a redis-server on 127.0.0.1 (a free port; the tests'
`RedisServer`, append-only file on, `--appendfsync everysec` by default), the real daemon watching an
inbox with `release_to` (`bench/dropbench.py`), and for a cluster setup `[cluster] role = "watch"` on
it and N `dropwarden run` judge processes with the same configuration file (`role = "judge"` from the
environment, as `tests/cluster_harness.py` starts them).

Files are created, written and closed *in place* in the inbox, at most `--window` of them not yet done
at once (a closed loop: the writer keeps the pipeline full), for `--seconds` or `--files`, whichever
ends first. Each file is timed from its close() until its name has left the inbox (released, or
quarantined for a finding), seen by inotify. Every file's content is distinct, so the verdict cache
never answers.

- regex: 4 KB of text with a seeded e-mail address and card number (each file is quarantined); the
  regex detector alone (OCR and vision off).
- vision: small distinct PNGs; the vision detector against `tests/vision_server.py` with a fixed
  `--latency-ms` (200) per request and no concurrency limit of its own, so judges x in-flight
  (`--vision-judge-workers` per judge, `[vision] max_in_flight` the same) is the limit. Each judge has
  its own GPU-gate lock directory, as separate judge hosts would.

Printed per setup: files/s, p50/p90/p99 latency, CPU ms per file of the watcher, the judges together
and Redis (the figure a busy machine skews least), and peak RSS per process. The summary gives the
scaling curve relative to one judge and the overhead of the cluster path over `role = "all"` with the
same workers as one judge (target <= 15 %). The load average is printed with every figure: on a
shared machine the absolute figures are noisy; `--rounds N` alternates the setups N times and reports
each setup's median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corpus import _Gen
from dropbench import DoneWatcher, cpu_seconds, peak_rss_mb, percentile, start_daemon, write_in_place

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' redis-server and judge processes, not a copy of them
from tests.cluster_harness import JudgeProcess, RedisServer  # noqa: E402

VISION_SERVER = REPO / "tests" / "vision_server.py"
TARGET_OVERHEAD = 15.0


# ------------------------------------------------------------------------------------------ files


def text_bodies(count: int, seed: int = 18) -> list[bytes]:
    """`count` distinct 4 KB texts, each with an e-mail address and a Luhn-valid card number."""
    gen = _Gen(seed)
    bodies = []
    for index in range(count):
        lines = [f"file {index:07d} of the cluster benchmark"]
        lines.append(f"Please bill card {gen.card()} and send the receipt to {gen.email()}.")
        while sum(len(line) + 1 for line in lines) < 4096:
            lines.append(gen.en_line())
        bodies.append("\n".join(lines).encode()[:4096])
    return bodies


def png_bodies(count: int, side: int) -> list[bytes]:
    from vision_bench import make_pngs  # PIL and the vision plugin only for this case

    return make_pngs(count, side, seed=18)


# ------------------------------------------------------------------------------------------ one setup


@dataclass
class Result:
    case: str
    judges: int  # 0: role "all", one process
    watcher_workers: int
    files: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    released: int = 0
    quarantined: int = 0
    cpu_ms_per_file: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after

    @property
    def label(self) -> str:
        return "all (1 proc)" if self.judges == 0 else f"{self.judges} judge{'s' * (self.judges > 1)}"

    @property
    def rate(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        got = self.latencies_ms
        return {
            "case": self.case,
            "setup": self.label,
            "judges": self.judges,
            "watcher_workers": self.watcher_workers,
            "files": self.files,
            "files_per_s": round(self.rate, 2),
            "p50_ms": round(percentile(got, 0.5), 1),
            "p90_ms": round(percentile(got, 0.9), 1),
            "p99_ms": round(percentile(got, 0.99), 1),
            "released": self.released,
            "quarantined": self.quarantined,
            "cpu_ms_per_file": {k: round(v, 2) for k, v in self.cpu_ms_per_file.items()},
            "rss_mb": {k: round(v, 1) for k, v in self.rss_mb.items()},
            "load_before_after": [round(v, 2) for v in self.load],
        }


def start_vision_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(VISION_SERVER), "--port", "0", "--delay", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"the vision server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/v1"


def vision_toml(url: str, in_flight: int, gate_dir: Path) -> str:
    return (
        f'[gpu]\nlock_dir = "{gate_dir}"\n'
        f'[vision]\nenabled = true\nbase_url = "{url}"\nmodel = "llava"\nresponse_format = "json_schema"\n'
        f"max_in_flight = {in_flight}\nretries = 0\ntimeout = 30\n"
    )


def drive(
    daemon: Any, bodies: list[bytes], suffix: str, seconds: float, window: int, rate: float = 0.0
) -> Result:
    """Write files in place, at most `window` not yet gone from the inbox (and, with `rate`, one every
    1/rate s: an open loop), until `seconds` or the bodies run out; wait for the last; return the
    timings (the caller fills in the rest)."""
    done = DoneWatcher(daemon)
    closed: dict[str, float] = {}
    try:
        began = time.monotonic()
        deadline = began + seconds
        for index, body in enumerate(bodies):
            if time.monotonic() > deadline:
                break
            if rate:
                time.sleep(max(0.0, began + index / rate - time.monotonic()))
            while len(closed) - len(done.done_at) >= window:
                time.sleep(0.0005)
            name = f"f{index:07d}{suffix}"
            closed[name] = write_in_place(daemon.inbox / name, body)
        done.wait_for(list(closed), timeout=120 + 2 * seconds)
    finally:
        done.close()
    result = Result("", 0, 0)
    result.files = len(closed)
    result.latencies_ms = [(done.done_at[name] - at) * 1000 for name, at in closed.items()]
    result.seconds = max(done.done_at[name] for name in closed) - min(closed.values())
    return result


def run_setup(case: str, judges: int, bodies: list[bytes], args: argparse.Namespace) -> Result:
    """One setup in a fresh directory: start everything, drive it, measure, stop everything (by pid)."""
    vision = case == "vision"
    judge_workers = args.vision_judge_workers if vision else args.judge_workers
    watcher_workers = args.watcher_workers if judges else judge_workers
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dw-cluster-bench-") as tmp:
        root = Path(tmp)
        server = redis = daemon = None
        judge_procs: list[JudgeProcess] = []
        try:
            extra = ""
            if vision:
                server, url = start_vision_server(args.latency_ms / 1000)
                extra += vision_toml(url, judge_workers, root / "gate")
            if judges:
                redis = RedisServer(root / "redis", appendfsync=args.appendfsync).start()
                extra += (
                    f'[cluster]\nrole = "watch"\nurl = "{redis.url}"\nnode = "w1"\n'
                    f"max_outstanding = {args.max_outstanding}\n"
                )
            daemon = start_daemon(root, release=True, workers=watcher_workers, extra=extra)
            for index in range(judges):
                env = {
                    "DROPWARDEN_CLUSTER__ROLE": "judge",
                    "DROPWARDEN_DAEMON__WORKERS": str(judge_workers),
                    "DROPWARDEN_GPU__LOCK_DIR": str(root / f"gate-judge{index}"),  # a host of its own
                }
                judge_procs.append(JudgeProcess(root / "dropwarden.toml", daemon.audit, env).start())
            pids = {"watcher" if judges else "all": daemon.proc.pid}
            pids.update({f"judge{i}": j.pid for i, j in enumerate(judge_procs)})
            if redis is not None and redis.proc is not None:
                pids["redis"] = redis.proc.pid
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            suffix = ".png" if vision else ".txt"
            result = drive(daemon, bodies, suffix, args.seconds, args.window, args.rate)
            result.case, result.judges, result.watcher_workers = case, judges, watcher_workers
            spent = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            per_file = {
                role: sum(v for k, v in spent.items() if k.startswith(role)) * 1000 / result.files
                for role in ("all", "watcher", "judge", "redis")
                if any(k.startswith(role) for k in spent)
            }
            per_file["total"] = sum(spent.values()) * 1000 / result.files
            result.cpu_ms_per_file = per_file
            result.rss_mb = {name: peak_rss_mb(pid) for name, pid in pids.items()}
            result.released = _count(root / "outbound")
            result.quarantined = _count(root / "q")
            result.load = (load_before, os.getloadavg()[0])
            return result
        finally:
            for judge_proc in judge_procs:
                judge_proc.stop()
            if daemon is not None:
                daemon.stop()
            if redis is not None:
                redis.stop()
            if server is not None:
                server.terminate()
                server.wait(10)


def _count(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".json"))


# ------------------------------------------------------------------------------------------ report


def median_result(results: list[Result]) -> Result:
    """The round with the median files/s (its latencies and CPU figures with it)."""
    ordered = sorted(results, key=lambda r: r.rate)
    return ordered[(len(ordered) - 1) // 2]


def print_table(results: list[Result]) -> None:
    """One row per setup; CPU ms per file: the watcher (or the one process), the judges together, Redis."""
    print(
        f"{'case':<7}{'setup':<14}{'w.wk':>5}{'files':>7}{'rel/qua':>10}{'files/s':>9}{'p50 ms':>9}"
        f"{'p90 ms':>9}{'p99 ms':>9}  {'CPU ms/file: watch judges redis total':<39}"
        f"{'load':<12}RSS MB per process"
    )
    for r in results:
        s = r.summary()
        cpu = r.cpu_ms_per_file
        first = cpu.get("all", cpu.get("watcher", 0.0))
        judges, redis_ms = cpu.get("judge", 0.0), cpu.get("redis", 0.0)
        cpu_text = f"{first:>8.2f} {judges:>7.2f} {redis_ms:>5.2f} {cpu['total']:>5.2f}"
        rss = " ".join(f"{k}={v:.0f}" for k, v in r.rss_mb.items())
        print(
            f"{r.case:<7}{r.label:<14}{r.watcher_workers:>5}{r.files:>7}{f'{r.released}/{r.quarantined}':>10}"
            f"{r.rate:>9.1f}{s['p50_ms']:>9.1f}{s['p90_ms']:>9.1f}{s['p99_ms']:>9.1f}  {cpu_text:<39}"
            f"{f'{r.load[0]:.2f}/{r.load[1]:.2f}':<12}{rss}"
        )


def verdicts(results: list[Result], rate: float = 0.0) -> list[str]:
    """The scaling curve per case, and the cluster path's overhead over role "all" on one judge: in
    throughput with a closed loop, in latency at a fixed `rate`."""
    lines = []
    for case in sorted({r.case for r in results}):
        mine = {r.judges: r for r in results if r.case == case}
        one = mine.get(1)
        if one is not None and one.rate:
            curve = ", ".join(f"{j} judges {mine[j].rate / one.rate:.2f}x" for j in sorted(mine) if j)
            lines.append(f"{case}: scaling vs 1 judge: {curve}")
        base = mine.get(0)
        if one is not None and base is not None and rate:
            latency = {q: (one.summary()[q] / base.summary()[q] - 1) * 100 for q in ("p50_ms", "p99_ms")}
            lines.append(
                f"{case}: cluster path (1 judge) vs role all at {rate:g} files/s: latency p50"
                f" {latency['p50_ms']:+.1f} %, p99 {latency['p99_ms']:+.1f} %"
                f" (target <= {TARGET_OVERHEAD:g} %)"
            )
        elif one is not None and base is not None and base.rate:
            overhead = (1 - one.rate / base.rate) * 100
            cpu = (one.cpu_ms_per_file["total"] / base.cpu_ms_per_file["total"] - 1) * 100
            lines.append(
                f"{case}: cluster path (1 judge) vs role all: throughput {overhead:+.1f} % lower"
                f" (target <= {TARGET_OVERHEAD:g} %), CPU per file {cpu:+.1f} % (all processes)"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", default="regex,vision", help="regex, vision or both (comma-separated)")
    parser.add_argument("--judges", default="1,2,4", help="judge process counts; role all is always run too")
    parser.add_argument("--no-all", action="store_true", help="skip the role all baseline")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of writing per setup at most")
    parser.add_argument("--files", type=int, default=3000, help="files per setup at most")
    parser.add_argument("--window", type=int, default=64, help="files written and not yet done, at most")
    parser.add_argument("--rate", type=float, default=0.0, help="files/s written (open loop); 0: closed")
    parser.add_argument("--watcher-workers", type=int, default=2, help="[daemon] workers of the watcher")
    parser.add_argument("--judge-workers", type=int, default=2, help="[daemon] workers per judge (regex)")
    parser.add_argument("--vision-judge-workers", type=int, default=4, help="per judge; = max_in_flight")
    parser.add_argument("--max-outstanding", type=int, default=64, help="[cluster] max_outstanding")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the vision server's fixed latency")
    parser.add_argument("--side", type=int, default=64, help="PNG side, pixels")
    parser.add_argument("--appendfsync", default="everysec", choices=("always", "everysec", "no"))
    parser.add_argument("--rounds", type=int, default=1, help="alternate the setups this many times")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout instead of the table")
    args = parser.parse_args()

    cases = [c for c in args.case.split(",") if c]
    counts = ([] if args.no_all else [0]) + [int(j) for j in args.judges.split(",") if j]
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; generating files", file=sys.stderr)
    bodies = {
        case: text_bodies(args.files) if case == "regex" else png_bodies(args.files, args.side)
        for case in cases
    }
    runs: dict[tuple[str, int], list[Result]] = {}
    for round_index in range(args.rounds):
        for case in cases:
            for judges in counts:
                print(f"round {round_index + 1}: {case}, {judges or 'role all'} judges", file=sys.stderr)
                runs.setdefault((case, judges), []).append(run_setup(case, judges, bodies[case], args))
    results = [median_result(runs[key]) for key in runs]
    if args.json:
        print(
            json.dumps(
                {"results": [r.summary() for r in results], "verdicts": verdicts(results, args.rate)},
                indent=1,
            )
        )
        return
    print(
        f"{os.cpu_count()} CPUs; "
        + (f"{args.rate:g} files/s" if args.rate else f"closed loop of {args.window} files")
        + f"; judge workers {args.judge_workers} "
        f"(regex), {args.vision_judge_workers} (vision, {args.latency_ms:g} ms per request); "
        f"redis appendfsync {args.appendfsync}; median of {args.rounds} round(s)"
    )
    print_table(results)
    for line in verdicts(results, args.rate):
        print(line)
    if any(r.quarantined + r.released != r.files for r in results):
        print("WARNING: some files are neither released nor quarantined")
    rates = [r.rate for r in results]
    if rates and statistics.fmean(rates) == 0:
        raise SystemExit("no file was judged")


if __name__ == "__main__":
    main()
