"""Every miss of the OCR benchmark, with what each view read: which page, layout, kind, the value drawn,
and per view (strategy) the lines read near where it was drawn.

    .venv/bin/python bench/ocr_misses.py --seed 2 [--pages 48] [--all-lines]

The pages are those of `bench/ocr_bench.py --seed N --pages P` (the same plan); each seeded page is judged
as the benchmark judges it, and for a value not found, every text view of the OCR extractor is shown.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from ocr_bench import overlap, plan  # noqa: E402

from dropwarden.config import Settings  # noqa: E402
from dropwarden.runtime import build_runtime  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pages", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--all-lines", action="store_true", help="every line of each view, not the near ones")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ocr-misses-"))
    folder = root / "pages"
    folder.mkdir()
    pages = plan(args.pages, args.seed)
    for name, page, fmt in pages:
        options = {"quality": 85 if page.orientation != "scan" else 60} if fmt == "JPEG" else {}
        (folder / name).write_bytes(page.encode(fmt, **options))
    runtime = build_runtime(Settings(state={"dir": root / "state"}, ocr={"enabled": True}))
    extractor = runtime.registry.extractors["ocr-tesseract"]
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name, page, _fmt in pages:
            if not page.seeded:
                continue
            verdict = runtime.judge.judge_name(fd, name, str(folder / name)).verdict
            findings = [f for f in verdict.findings if f.location.bbox is not None]
            missed = [item for item in page.seeded if not _found(item, findings)]
            if not missed:
                continue
            views, _ = extractor.read_frames((folder / name).read_bytes())
            for item in missed:
                print(f"== {name} {page.orientation} {item.kind} {item.value!r} at {item.box}")
                x0, y0, x1, y1 = item.box
                near = (x0 - 120, y0 - 120, x1 + 120, y1 + 120)  # the context words may be a line away
                for view in views:
                    print(f"   [{view.name}]")
                    for region in view.provenance["regions"]:
                        line = view.text[region["start"] : region["end"]]
                        if args.all_lines or overlap(near, region["bbox"]) > 0:
                            shown = f"v={int(region['vertical'])} c={region['confidence']}"
                            print(f"     {region['bbox']} {shown} {line!r}")
    finally:
        os.close(fd)
        runtime.close()


def _found(item: Any, findings: list[Any]) -> bool:
    return any(f.type == item.kind and overlap(f.location.bbox, item.box) >= 0.3 for f in findings)


if __name__ == "__main__":
    main()
