"""Dump every finding of the grown and the old rule set on both bench corpora, or diff two dumps.

An engine change that should leave the findings as they were is checked by dumping before and after:

    PYTHONPATH=daemon:plugins .venv/bin/python bench/regex_findings_diff.py dump before.json
    PYTHONPATH=daemon:plugins .venv/bin/python bench/regex_findings_diff.py diff before.json after.json

`diff` prints each finding that differs (ignoring `detector_version`, which follows the rules' text) and
exits 1 if any does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from corpus import load_or_build  # bench/ is sys.path[0]
from regex_bench import BASELINE_SECRET_RULES, Harness

OUT_DIR = Path(__file__).resolve().parent / "out"


def dump(path: Path, mb: float = 5, seed: int = 1) -> None:
    harness = Harness(None)
    ids = [rule.id for rule in harness.detector().rules]
    old_off = [i for i in ids if i.startswith("secrets.") and i not in BASELINE_SECRET_RULES]
    out: dict[str, Any] = {}
    for corpus_name, issue_time in (("current", False), ("issue", True)):
        corpus = load_or_build(mb, seed, OUT_DIR, issue_time=issue_time)
        views = harness.views(corpus.chunks)
        for rules_name, disable in (("grown", None), ("old", old_off)):
            found = harness.judge(harness.detector(disable), views)
            out[f"{corpus_name}/{rules_name}"] = [
                {
                    "findings": [_without_version(f.to_dict()) for f in chunk],
                    "omitted": sorted([t, int(s), n] for (t, s), n in chunk.omitted.items()),
                    "inexact": sorted(chunk.inexact),
                }
                for chunk in found
            ]
    path.write_text(json.dumps(out, indent=0, sort_keys=True))


def _without_version(finding: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in finding.items() if k != "detector_version"}


def diff(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    differences = 0
    for key in sorted(set(a) | set(b)):
        for n, (old, new) in enumerate(zip(a.get(key, []), b.get(key, []), strict=True)):
            if old == new:
                continue
            differences += 1
            print(f"{key} chunk {n}: {len(old['findings'])} -> {len(new['findings'])} findings")
            for x, y in zip(old["findings"], new["findings"], strict=False):
                if x != y:
                    print(f"  {x['type']} at {x['location']}: {y['type']} at {y['location']}")
    print("identical" if not differences else f"{differences} chunks differ")
    return 1 if differences else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["dump"] and len(sys.argv) == 3:
        dump(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["diff"] and len(sys.argv) == 4:
        sys.exit(diff(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
