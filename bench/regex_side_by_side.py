"""The regex rule set against an older one, side by side in one process: the same corpus, the same detector
code, passes interleaved, so the load other processes put on the machine weighs on both alike.

The older rule set is the built-in packs as they were at a git revision (default: where this branch left
`main`); everything else (engine, validators, detector) is the code in this tree, so the difference is
what the rules cost. Prints MB/s per core (median and best of the passes), the recall of both on the
seeded corpus, and the load average.

    .venv/bin/python bench/regex_side_by_side.py [--mb 10] [--rounds 5] [--baseline-ref main]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from corpus import load_or_build  # bench/ is sys.path[0]
from regex_bench import OUT_DIR, Harness, measure_recall

REPO = Path(__file__).resolve().parent.parent


def pack_text(ref: str, pack: str) -> str:
    """A built-in pack's TOML at git revision `ref`."""
    path = f"plugins/dropwarden_regex/packs/{pack}.toml"
    return subprocess.run(
        ["git", "-C", str(REPO), "show", f"{ref}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def detector_at(harness: Harness, ref: str | None) -> Any:
    """A warmed-up detector with the default settings, its packs read at `ref` (None: this tree's)."""
    from dropwarden_regex import detector, rules

    detector._compile_settings.cache_clear()
    if ref is None:
        return harness.detector()
    original = rules.load_pack

    def old_pack(name: str) -> list[Any]:
        data = tomllib.loads(pack_text(ref, name))
        where = f"pack {name}@{ref}"
        return [rules.compile_rule(spec, f"pack:{name}", f"{where}: rule[{i}]") for i, spec in
                enumerate(data.get("rule", []))]  # fmt: skip

    rules.load_pack = old_pack
    try:
        return harness.detector()
    finally:
        rules.load_pack = original
        detector._compile_settings.cache_clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mb", type=float, default=10.0, help="corpus size in MB, default 10")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="passes of each rule set, interleaved")
    parser.add_argument("--baseline-ref", default=None, help="git revision of the older packs")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="corpus cache folder")
    args = parser.parse_args()
    ref = (
        args.baseline_ref
        or subprocess.run(
            ["git", "-C", str(REPO), "merge-base", "HEAD", "main"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )

    corpus = load_or_build(args.mb, args.seed, args.out, 1_000_000)
    harness = Harness(None)
    views = harness.views(corpus.chunks)
    mb = sum(len(view.utf8) for view in views) / 1e6
    sides = {f"packs at {ref[:12]}": detector_at(harness, ref)}
    sides["packs in this tree"] = detector_at(harness, None)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    results: dict[str, list[list[Any]]] = {}
    for _ in range(args.rounds):
        for name, detector in sides.items():
            cpu = time.process_time()
            results[name] = harness.judge(detector, views)
            seconds[name].append(time.process_time() - cpu)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{mb:.1f} MB, {args.rounds} interleaved passes each, {os.cpu_count()} CPUs, load average {load}")
    for name, detector in sides.items():
        times = seconds[name]
        recall = measure_recall(corpus.seeded, results[name])
        found, seeded = sum(recall.found.values()), sum(recall.seeded.values())
        print(
            f"{name:24} {len(detector.rules):3} rules  {mb / statistics.median(times):7.1f} MB/s/core median"
            f"  {mb / min(times):7.1f} best  recall {found}/{seeded}"
            f"  unseeded findings {sum(recall.unseeded_findings.values())}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
