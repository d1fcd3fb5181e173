"""Instructions per MB of the grown and the old rule set (callgrind): a rate ratio that load does not skew.

    PYTHONPATH=daemon:plugins .venv/bin/python bench/regex_instructions.py [--mb 5] [--passes 2]
        [--configs issue:grown,issue:old,current:grown,current:old]

Each configuration runs in its own `valgrind --tool=callgrind` (installed separately) under a fixed hash
seed and without address randomisation; only the timed passes are counted (`--toggle-collect` on the
one `itertools.starmap` call that runs them, after the detector is built and has judged every view
once). Prints M instructions per MB for each, and the grown/old rate ratio per corpus.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from corpus import load_or_build  # bench/ is sys.path[0]
from regex_bench import BASELINE_SECRET_RULES, OUT_DIR, Harness


def run_passes(corpus: str, which: str, mb: float, passes: int) -> None:
    """The child: build the detector, judge once (warm), then judge `passes` times inside starmap."""
    harness = Harness(None)
    built = load_or_build(mb, 1, OUT_DIR, 1_000_000, issue_time=corpus == "issue")
    detector = harness.detector()
    if which == "old":
        ids = [rule.id for rule in detector.rules]
        detector = harness.detector(
            [i for i in ids if i.startswith("secrets.") and i not in BASELINE_SECRET_RULES]
        )
    views = harness.views(built.chunks)
    harness.judge(detector, views)
    list(itertools.starmap(lambda: [harness.judge(detector, views) for _ in range(passes)], [()]))


def counted_instructions(command: list[str], env: dict[str, str]) -> int:
    """Instructions `command` runs inside its `itertools.starmap` call, counted by callgrind without
    address randomisation (its output discarded; `env` should fix PYTHONHASHSEED)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        valgrind = [
            "setarch", "-R", "valgrind", "--tool=callgrind", "--collect-atstart=no",
            "--toggle-collect=starmap_next", f"--callgrind-out-file={out}",
        ]  # fmt: skip
        subprocess.run(
            [*valgrind, *command], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        summary = re.search(r"^summary: (\d+)", out.read_text(), re.MULTILINE)
        assert summary is not None, "callgrind wrote no summary"
        return int(summary.group(1))


def count(corpus: str, which: str, mb: float, passes: int) -> float:
    """M instructions per MB of one configuration's timed passes."""
    command = [
        sys.executable,
        __file__,
        "--child",
        f"{corpus}:{which}",
        "--mb",
        str(mb),
        "--passes",
        str(passes),
    ]
    return counted_instructions(command, {**os.environ, "PYTHONHASHSEED": "0"}) / passes / mb / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=5.0)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--configs", default="issue:grown,issue:old,current:grown,current:old")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        corpus, which = args.child.split(":")
        run_passes(corpus, which, args.mb, args.passes)
        return
    figures: dict[tuple[str, str], float] = {}
    for config in args.configs.split(","):
        corpus, which = config.split(":")
        figures[corpus, which] = count(corpus, which, args.mb, args.passes)
        print(f"{corpus:8} {which:6} {figures[corpus, which]:8.2f} M instructions per MB", flush=True)
    for corpus in ("issue", "current"):
        if (corpus, "grown") in figures and (corpus, "old") in figures:
            ratio = figures[corpus, "old"] / figures[corpus, "grown"]
            print(f"{corpus:8} grown/old rate {ratio:.3f}")


if __name__ == "__main__":
    main()
