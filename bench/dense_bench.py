"""Dense-findings benchmark: peak RSS, time and record sizes for a max_file_size file made of card numbers.

    .venv/bin/python bench/dense_bench.py [--mib N] [--no-daemon] [--json]

The file is `[limits] max_file_size` bytes (64 MiB by default) of Luhn-valid Visa numbers, one per line
(4-4-4-4, 20 bytes a line): every line a finding. It is judged twice, each time by a fresh process:

- **scan**: `dropwarden scan --format json FILE`; wall time from start to exit, peak RSS of the process
  (`ru_maxrss` from wait4), and the size of its JSON output.
- **daemon**: `dropwarden run` watching a temporary inbox; the file is renamed in, and the time is from
  the rename to the decision record; peak RSS is the daemon's VmHWM; the decision's audit line, the
  alert and the quarantine sidecar are measured.

Targets: under 200 MB and under 10 s. The file is cached under bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
LINES = 65_536  # distinct numbers, repeated to the size


def luhn_complete(payload: str) -> str:
    total = 0
    for position, char in enumerate(reversed(payload)):
        digit = int(char) * (2 if position % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return payload + str(-total % 10)


def dense_file(size: int) -> tuple[Path, int]:
    """The cached file of `size` bytes and how many card numbers it holds (whole lines)."""
    path = OUT / f"dense-cards-{size}.txt"
    count = size // 20
    if path.exists() and path.stat().st_size == size:
        return path, count
    rng = random.Random(1)
    block = []
    for _ in range(LINES):
        number = luhn_complete("4" + "".join(rng.choice("0123456789") for _ in range(14)))
        block.append(f"{number[:4]} {number[4:8]} {number[8:12]} {number[12:]}\n")
    unit = "".join(block).encode()
    OUT.mkdir(exist_ok=True)
    with path.open("wb") as handle:
        written = 0
        while written < size:
            piece = unit[: size - written]
            handle.write(piece)
            written += len(piece)
    return path, count


def run_scan(path: Path, config: Path) -> dict:
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dropwarden", "scan", "--format", "json", "--config", str(config), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 1:
        raise SystemExit(f"scan exited {proc.returncode}: {err.decode(errors='replace')}")
    (record,) = json.loads(out)["files"]
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "output_bytes": len(out),
        "counts": record["counts"],
    }


def run_daemon(path: Path, root: Path) -> dict:
    inbox, audit, alerts, quarantine = root / "inbox", root / "audit.jsonl", root / "alerts.jsonl", root / "q"
    inbox.mkdir()
    config = root / "dropwarden.toml"
    config.write_text(
        f'[state]\ndir = "{root / "state"}"\n[audit]\npath = "{audit}"\n[metrics]\nlisten = ""\n'
        f'[[watch]]\npath = "{inbox}"\nquarantine_dir = "{quarantine}"\n'
        f'[[alerts.sink]]\ntype = "jsonl"\npath = "{alerts}"\n'
    )
    log = root / "daemon.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dropwarden", "run", "--config", str(config), "--log-format", "json"],
        stderr=log.open("w"),
    )
    try:
        deadline = time.monotonic() + 60
        while '"event": "watching"' not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("daemon did not start:\n" + log.read_text())
            time.sleep(0.05)
        staged = root / "cards.txt"
        shutil.copyfile(path, staged)  # written before the clock starts; renamed in, as a producer would
        started = time.time()
        os.rename(staged, inbox / "cards.txt")
        line = b""
        deadline = time.monotonic() + 300
        while not line:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("no decision:\n" + log.read_text()[-3000:])
            time.sleep(0.05)
            if audit.exists():
                line = next(
                    (raw for raw in audit.read_bytes().splitlines() if b'"type":"decision"' in raw), b""
                )
        record = json.loads(line)
        seconds = datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp() - started
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the alert and the quarantine follow the decision
            sidecars = list(quarantine.glob("*.json")) if quarantine.exists() else []
            if sidecars and alerts.exists() and alerts.read_text().strip():
                break
            time.sleep(0.05)
        rss = next(
            int(entry.split()[1]) / 1024
            for entry in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            if entry.startswith("VmHWM:")
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    body = record["body"]
    (run,) = [r for r in body["detectors"] if r["detector"] == "regex" and r["view"] == "text"]
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(rss, 1),
        "audit_line_bytes": len(line),
        "alert_bytes": len(alerts.read_bytes()) if alerts.exists() else None,
        "sidecar_bytes": sidecars[0].stat().st_size if sidecars else None,
        "findings_counted": run["findings"],
        "findings_kept": len(body["findings"]),
    }


def main() -> None:
    from dropwarden.config import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_mib = int(Settings().limits.max_file_size) // (1 << 20)
    parser.add_argument("--mib", type=int, default=default_mib, help="file size (default: max_file_size)")
    parser.add_argument("--no-daemon", action="store_true", help="only `dropwarden scan`")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    path, count = dense_file(args.mib << 20)
    result: dict = {
        "mib": args.mib,
        "card_numbers": count,
        "cpus": os.cpu_count(),
        "load": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="dw-dense-") as tmp:
        root = Path(tmp)
        config = root / "scan.toml"
        config.write_text(f'[state]\ndir = "{root / "scan-state"}"\n')
        result["scan"] = run_scan(path, config)
        if not args.no_daemon:
            result["daemon"] = run_daemon(path, root)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{args.mib} MiB, {count} Luhn-valid card numbers, {result['cpus']} CPUs, load {result['load']:.2f}"
    )
    scan = result["scan"]
    counted = ", ".join(
        f"{c['type']} {c['count']}{'' if c['exact'] else '+'} (kept {c['kept']})" for c in scan["counts"]
    )
    print(
        f"scan     {scan['seconds']:>6} s  peak RSS {scan['peak_rss_mb']:>6} MB  "
        f"JSON {scan['output_bytes']} bytes  [{counted}]"
    )
    if "daemon" in result:
        daemon = result["daemon"]
        print(
            f"daemon   {daemon['seconds']:>6} s  peak RSS {daemon['peak_rss_mb']:>6} MB  "
            f"audit line {daemon['audit_line_bytes']} B, alert {daemon['alert_bytes']} B, "
            f"sidecar {daemon['sidecar_bytes']} B  [{daemon['findings_counted']} counted, "
            f"{daemon['findings_kept']} kept]"
        )
    print("targets: under 200 MB and under 10 s")


if __name__ == "__main__":
    main()
