"""Today's regex detector against the code of the day issue 15 was filed, on the same corpus, side by side.

Issue 15 asks that with the grown rule set the regex benchmark stays at least at the rate of its day.
`regex_bench.py` and `regex_instructions.py` compare the grown set with the old rule set *on today's
engine*; this compares it with the issue-time code itself (its engine and its rules, main at ee2ab3a),
checked out in a worktree of its own:

    git worktree add --detach ../dw-issue15 ee2ab3a
    PYTHONPATH=daemon:plugins .venv/bin/python bench/regex_day.py --day-tree ../dw-issue15
        [--mb 5] [--passes 2] [--rounds 21] [--corpus issue|current] [--no-count] [--no-timed]

Four configurations, each in a process of its own (two versions of `dropwarden` cannot share one):
`day` (the day-tree's code, its default rules), `dayrules` (this tree's code reading the day-tree's pack
files: the engine's change alone), `old` (this tree, the secret rules added since switched off, as
`regex_bench.py`'s baseline and `regex_instructions.py`'s `old`) and `grown` (this tree, default rules).
Every one judges the
same bytes: the corpus is written once to `bench/out/` by this tree's generator (`--corpus issue` is
generator v3, byte for byte the corpus of the day) and read back by each. Each builds its detector from
`RulesSettings()` as `regex_bench.py` does (the API is the same in both trees), judges every view once
(findings and recall, printed), then:

- count: under `valgrind --tool=callgrind` (hash seed fixed, no address randomisation) only `--passes`
  passes are counted (`--toggle-collect` on the `itertools.starmap` call that runs them): M
  instructions per MB, which load does not skew;
- timed: the four processes take `--rounds` passes each in turn (the order rotated every round), each
  pass timed in process CPU time; medians in MB/s per core, with the load average before and after.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from corpus import MB, Corpus, load_or_build  # bench/ is sys.path[0]
from regex_bench import BASELINE_SECRET_RULES, OUT_DIR, measure_recall
from regex_instructions import counted_instructions

THIS_TREE = Path(__file__).resolve().parent.parent
SEED = 1
CHUNK_BYTES = 1_000_000


class Judge:
    """One tree's detector and views, built through the API both trees share."""

    def __init__(self, which: str, corpus: Corpus, day_tree: Path) -> None:
        from dropwarden.judge.textdecode import decode_text
        from dropwarden.redact import Fingerprinter
        from dropwarden.registry import DetectContext
        from dropwarden.views import TextView
        from dropwarden_regex.detector import RegexDetector
        from dropwarden_regex.settings import RulesSettings

        rules = RulesSettings()
        if which == "dayrules":
            use_packs_of(day_tree)
        if which == "old":
            ids = [rule.id for rule in RegexDetector(rules).rules]
            newer = [i for i in ids if i.startswith("secrets.") and i not in BASELINE_SECRET_RULES]
            rules = rules.model_copy(update={"disable": newer})
        self.detector = RegexDetector(rules)
        self.ctx = DetectContext(fingerprint=Fingerprinter(b"k" * 32))
        self.views = []
        for chunk in corpus.chunks:
            decoded = decode_text(chunk.encode("utf-8"))
            assert decoded.utf8 is not None, "the corpus is UTF-8"
            self.views.append(TextView.from_utf8("text", decoded.text, decoded.utf8))

    def judge(self) -> list[list[Any]]:
        return [self.detector.detect(view, self.ctx) for view in self.views]


def use_packs_of(tree: Path) -> None:
    """This tree's code reads its built-in packs from `tree` (as `regex_side_by_side.py` reads a ref's)."""
    import tomllib

    from dropwarden_regex import rules

    def pack_of_day(name: str) -> list[Any]:
        data = tomllib.loads((tree / "plugins/dropwarden_regex/packs" / f"{name}.toml").read_text("utf-8"))
        return [rules.compile_rule(spec, f"pack:{name}", f"pack {name}@{tree}: rule[{i}]") for i, spec in
                enumerate(data.get("rule", []))]  # fmt: skip

    rules.load_pack = pack_of_day


def child(which: str, corpus_kind: str, mb: float, mode: str, passes: int, day_tree: Path) -> None:
    """Build, judge once (findings on stdout as one JSON line), then count or serve timed passes."""
    corpus = load_or_build(mb, SEED, OUT_DIR, CHUNK_BYTES, issue_time=corpus_kind == "issue")
    judge = Judge(which, corpus, day_tree)
    results = judge.judge()
    if mode == "count":
        list(itertools.starmap(lambda: [judge.judge() for _ in range(passes)], [()]))
        return
    recall = measure_recall(corpus.seeded, results)
    import dropwarden_regex.detector as module

    info = {
        "module": module.__file__,
        "rules": len(judge.detector.rules),
        "version": str(getattr(judge.detector, "version", "?")),
        "findings": dict(Counter(f.type for per_view in results for f in per_view)),
        "found": sum(recall.found.values()),
        "seeded": sum(recall.seeded.values()),
        "missed": {k: n - recall.found[k] for k, n in recall.seeded.items() if recall.found[k] < n},
        "unseeded": sum(recall.unseeded_findings.values()),
    }
    del results
    print(json.dumps(info), flush=True)
    for line in sys.stdin:  # one line per pass asked for; the answer is its CPU seconds
        if line.strip() != "pass":
            break
        gc.collect()
        start = time.process_time()
        judge.judge()
        print(time.process_time() - start, flush=True)


def child_command(which: str, args: argparse.Namespace, mode: str) -> list[str]:
    return [sys.executable, __file__, "--child", which, "--corpus", args.corpus, "--mb", str(args.mb),
            "--mode", mode, "--passes", str(args.passes), "--day-tree", str(args.day_tree)]  # fmt: skip


def child_env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{tree / 'daemon'}:{tree / 'plugins'}", "PYTHONHASHSEED": "0"}


def count(which: str, tree: Path, args: argparse.Namespace) -> float:
    """M instructions per MB of one configuration's counted passes."""
    instructions = counted_instructions(child_command(which, args, "count"), child_env(tree))
    return instructions / args.passes / args.mb / 1e6


def timed(trees: dict[str, Path], args: argparse.Namespace, nbytes: int) -> dict[str, list[float]]:
    """Each configuration's per-pass MB/s per core, the passes taken in turn."""
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    procs = {
        which: subprocess.Popen(child_command(which, args, "serve"), env=child_env(tree), **pipes)
        for which, tree in trees.items()
    }
    for which, proc in procs.items():
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        print(f"{which:8} {info['rules']:3} rules, {info['module']}, version {info['version']}")
        found = f"recall {info['found']}/{info['seeded']} (missed {info['missed'] or 'none'})"
        total = sum(info["findings"].values())
        print(f"         {found}, {total} findings, {info['unseeded']} outside seeded items")
        print(f"         {dict(sorted(info['findings'].items()))}", flush=True)
    rates: dict[str, list[float]] = {which: [] for which in procs}
    order = list(procs)
    for round_ in range(args.rounds):
        for which in order[round_ % len(order) :] + order[: round_ % len(order)]:
            proc = procs[which]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("pass\n")
            proc.stdin.flush()
            rates[which].append(nbytes / MB / float(proc.stdout.readline()))
    for proc in procs.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    return rates


def print_ratios(rate: dict[str, float]) -> None:
    """Rate ratios: the engine's change (dayrules/day), the rules' (grown/dayrules), the issue's criterion."""
    pairs = (("dayrules", "day"), ("grown", "dayrules"), ("grown", "old"), ("grown", "day"))
    print("  rate ratios: " + ", ".join(f"{a}/{b} {rate[a] / rate[b]:.3f}" for a, b in pairs))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--day-tree", type=Path, help="a checkout of the issue-time code (ee2ab3a)")
    parser.add_argument("--corpus", choices=("issue", "current"), default="issue")
    parser.add_argument("--mb", type=float, default=5.0)
    parser.add_argument("--passes", type=int, default=2, help="counted passes per configuration")
    parser.add_argument("--rounds", type=int, default=21, help="timed passes per configuration")
    parser.add_argument("--no-count", action="store_true", help="skip the callgrind counts")
    parser.add_argument("--no-timed", action="store_true", help="skip the timed passes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.corpus, args.mb, args.mode, args.passes, args.day_tree)
        return
    if args.day_tree is None:
        parser.error("--day-tree is required (git worktree add --detach ../dw-issue15 ee2ab3a)")
    args.day_tree = args.day_tree.resolve()
    trees = {"day": args.day_tree, "dayrules": THIS_TREE, "old": THIS_TREE, "grown": THIS_TREE}
    corpus = load_or_build(args.mb, SEED, OUT_DIR, CHUNK_BYTES, issue_time=args.corpus == "issue")
    nbytes = sum(len(chunk.encode("utf-8")) for chunk in corpus.chunks)
    print(f"corpus {corpus.path} ({nbytes / MB:.2f} MB, {len(corpus.seeded)} seeded items)", flush=True)
    if not args.no_timed:
        before = load()
        rates = timed(trees, args, nbytes)
        print(f"timed: {args.rounds} passes each, in turn; load {before} before, {load()} after")
        for which, per_pass in rates.items():
            q = statistics.quantiles(per_pass, n=4) if len(per_pass) > 1 else per_pass * 3
            print(f"  {which:8} median {statistics.median(per_pass):7.1f} MB/s per core "
                  f"(quartiles {q[0]:.1f}-{q[2]:.1f})")  # fmt: skip
        print_ratios({which: statistics.median(per_pass) for which, per_pass in rates.items()})
    if not args.no_count:
        figures = {}
        for which, tree in trees.items():
            figures[which] = count(which, tree, args)
            print(f"count: {which:8} {figures[which]:8.2f} M instructions per MB", flush=True)
        print_ratios({which: 1 / figure for which, figure in figures.items()})


if __name__ == "__main__":
    main()
