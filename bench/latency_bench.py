"""Latency as users see it: files written in place, timed from close() until they have left the inbox.

    .venv/bin/python bench/latency_bench.py [--rates 10,100] [--seconds 5] [--lone 3]

The real daemon watches a temporary inbox with `release_to` (regex detector only, OCR off). Files
of 4 KB are created, written and closed *in place* in the inbox (as `cp`, `scp` or an SMB client
does), at a fixed arrival rate; each is timed from its close() until its name is gone from the inbox
(released or quarantined), polled every 0.5 ms. `--lone` files are also written one at a time after
a quiet pause, to show a lone file is as fast as one in a stream. Prints p50/p90/p99 per rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from dropbench import BODY_4K, percentile, start_daemon


def timed_files(inbox: Path, tag: str, count: int, interval: float) -> list[float]:
    """Write `count` files `interval` apart; return each one's close()-to-gone time in ms."""
    latencies: list[float] = []
    pending: dict[str, float] = {}
    lock = threading.Lock()
    done = threading.Event()

    def watch_gone() -> None:
        while not done.is_set() or pending:
            with lock:
                items = list(pending.items())
            now = time.monotonic()
            for name, closed in items:
                if not os.path.lexists(inbox / name):
                    with lock:
                        del pending[name]
                    latencies.append((now - closed) * 1000)
                elif now - closed > 30:
                    raise SystemExit(f"{name} still in the inbox after 30 s")
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch_gone)
    watcher.start()
    start = time.monotonic()
    for index in range(count):
        target = start + index * interval
        time.sleep(max(0.0, target - time.monotonic()))
        name = f"{tag}-{index:06d}.txt"
        fd = os.open(inbox / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, BODY_4K)
        os.close(fd)
        with lock:
            pending[name] = time.monotonic()
    done.set()
    watcher.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="10,100", help="arrival rates, files/s (comma-separated)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of arrivals per rate")
    parser.add_argument("--lone", type=int, default=3, help="lone files, each after a 2 s pause")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dw-latency-") as tmp:
        root = Path(tmp)
        daemon = start_daemon(root, release=True)
        try:
            print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; 4 KB files written in place")
            print(f"{'arrivals':>12} {'files':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
            for rate in (float(r) for r in args.rates.split(",")):
                count = max(1, int(rate * args.seconds))
                got = timed_files(root / "inbox", f"r{rate:g}", count, 1.0 / rate)
                print(
                    f"{rate:>8g} /s {len(got):>6} {statistics.median(got):>8.1f} {percentile(got, 0.9):>8.1f}"
                    f" {percentile(got, 0.99):>8.1f} {max(got):>8.1f}"
                )
            lone: list[float] = []
            for index in range(args.lone):
                time.sleep(2.0)
                lone += timed_files(root / "inbox", f"lone{index}", 1, 0)
            if lone:
                print(f"{'lone':>12} {len(lone):>6} " + " ".join(f"{v:.1f}" for v in lone) + " ms")
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
