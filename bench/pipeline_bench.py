"""Pipeline benchmark as users see it: files written in place, renamed in or copied in large, on the real
daemon; latency from close() (or the rename) until the file is done, end-to-end files/s, peak RSS.

    .venv/bin/python bench/pipeline_bench.py [--modes inplace,rename,large] [--watches release,plain]
        [--rates 10,100,0] [--seconds 3] [--files 3000] [--large-mb 200] [--large-files 2]
        [--dir DIR] [--json]

Each row runs a fresh `dropwarden run` (regex detector, OCR off, audit fsync "batch", 2 workers) on a
temporary inbox. A file is *done*, on a `release_to` watch, when its name has left the inbox (released or
quarantined; seen by inotify IN_MOVED_FROM/IN_DELETE); on a plain watch, when its decision record is in
the audit log (nothing moves for a clean file, so the record is the act). Modes:

- inplace: 4 KB files created, written and closed in the inbox (cp, scp, an SMB/NFS client);
- rename:  4 KB files written to a staging folder beside the inbox first (untimed), then renamed in;
- large:   `--large-files` files of `--large-mb` MB copied in place, one after the other (1 MiB writes).

Rate 0 means as fast as possible: `--files` files. Files/s is files ÷ (first write or rename to the last
file done). CPU ms/f is the daemon's user + system CPU time per file over the same span (the figure
that a busy machine skews least), and its system share apart. Peak RSS is the daemon's VmHWM. The
header names the file system under test with its mount options: with online `discard`, each file a
release takes out of the folder costs a TRIM, and a run right after another pays for the other's
clean-up too (`bench/README.md`); `--dir` puts the run on another file system.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from dropbench import (
    BODY_4K,
    DoneWatcher,
    file_system_of,
    peak_rss_mb,
    percentile,
    start_daemon,
    user_system_seconds,
    write_in_place,
)


def run_row(mode: str, release: bool, rate: float, args: argparse.Namespace) -> dict[str, object]:
    # What earlier rows (or anything else) left to write back, and their clean-up's TRIMs on a file
    # system mounted with online discard, are done before this row begins, not during it.
    os.sync()
    with tempfile.TemporaryDirectory(prefix="dw-pipeline-", dir=args.dir) as tmp:
        root = Path(tmp)
        large = args.large_mb * 1_000_000
        extra = f"[limits]\nmax_file_size = {large + (1 << 20)}\n" if mode == "large" else ""
        daemon = start_daemon(root, release=release, workers=args.workers, extra=extra)
        watcher = DoneWatcher(daemon)
        try:
            if mode == "large":
                count = args.large_files
                body = (BODY_4K * (large // len(BODY_4K) + 1))[:large]
            else:
                count = args.files if rate == 0 else max(1, int(rate * args.seconds))
                body = BODY_4K
            names = [f"{mode}-{index:06d}.txt" for index in range(count)]
            if mode == "rename":
                staging = root / "staging"
                staging.mkdir()
                for name in names:
                    (staging / name).write_bytes(body)
            started: dict[str, float] = {}
            user_before, system_before = user_system_seconds(daemon.proc.pid)
            first = time.monotonic()
            for index, name in enumerate(names):
                if rate > 0 and mode != "large":
                    time.sleep(max(0.0, first + index / rate - time.monotonic()))
                if mode == "rename":
                    os.rename(root / "staging" / name, daemon.inbox / name)
                    started[name] = time.monotonic()
                else:
                    started[name] = write_in_place(daemon.inbox / name, body)
                if mode == "large":
                    watcher.wait_for([name], 600)
            watcher.wait_for(names, 600)
            user, system = user_system_seconds(daemon.proc.pid)
            user, system = user - user_before, system - system_before
            rss = peak_rss_mb(daemon.proc.pid)
        finally:
            watcher.close()
            daemon.stop()
    latencies = [(watcher.done_at[name] - started[name]) * 1000 for name in names]
    last = max(watcher.done_at[name] for name in names)
    return {
        "mode": mode,
        "watch": "release_to" if release else "plain",
        "rate": f"{rate:g}" if rate else "max",
        "files": count,
        "p50_ms": round(statistics.median(latencies), 1),
        "p90_ms": round(percentile(latencies, 0.9), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "files_per_s": round(count / (last - first), 1),
        "cpu_ms_per_file": round((user + system) * 1000 / count, 2),
        "sys_ms_per_file": round(system * 1000 / count, 2),
        "peak_rss_mb": round(rss, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", default="inplace,rename,large")
    parser.add_argument("--watches", default="release,plain")
    parser.add_argument(
        "--rates", default="10,100,0", help="files/s, comma-separated; 0: as fast as possible"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of arrivals at a fixed rate")
    parser.add_argument("--files", type=int, default=3000, help="files at rate 0")
    parser.add_argument("--large-mb", type=int, default=200)
    parser.add_argument("--large-files", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--dir", type=Path, help="where the inbox and the daemon's state go (default: the temp folder)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.json:
        print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; regex detector, audit fsync batch")
        print(f"file system: {file_system_of(args.dir or Path(tempfile.gettempdir()))}")
        print(
            f"{'mode':<8} {'watch':<10} {'rate':>5} {'files':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
            f" {'max ms':>8} {'files/s':>8} {'CPU ms/f':>8} {'sys ms/f':>8} {'RSS MB':>7}"
        )
    for mode in args.modes.split(","):
        for watch in args.watches.split(","):
            rates = [0.0] if mode == "large" else [float(r) for r in args.rates.split(",")]
            for rate in rates:
                row = run_row(mode, watch == "release", rate, args)
                if args.json:
                    print(json.dumps(row), flush=True)
                    continue
                print(
                    f"{row['mode']:<8} {row['watch']:<10} {row['rate']!s:>5} {row['files']:>6}"
                    f" {row['p50_ms']:>8} {row['p90_ms']:>8} {row['p99_ms']:>8} {row['max_ms']:>8}"
                    f" {row['files_per_s']:>8} {row['cpu_ms_per_file']:>8} {row['sys_ms_per_file']:>8}"
                    f" {row['peak_rss_mb']:>7}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
