"""OCR benchmark: seconds per page through Tesseract, and recall of seeded PII read back through OCR.

    .venv/bin/python bench/ocr_bench.py [--pages 120] [--seed 1] [--json] [--misses] [--save DIR] [--ocr JSON]
                                [--limits JSON]

Pages are generated (tests/ocr_pages.py, tests/manga_pages.py) in six layouts, in turn: horizontal
Japanese, vertical Japanese and English documents drawn with the Noto CJK fonts at 20-36 px; manga panels
(vertical speech bubbles on screentone or line-textured grey, digits and hyphens upright one per cell,
columns running to the bubble's border, text down to 15 px); mixed panels (vertical bubbles and a
horizontal caption); scans (small text, turned 1-3 degrees, blurred, noisy, JPEG quality 35-60). Three
pages in four carry two seeded values each (phone, My Number, card, e-mail, in turn); the rest are clean
and carry decoy numbers instead (dates, amounts, order and tracking numbers). Some document pages are
blurred, some saved as JPEG. Each page is judged as `dropwarden scan` judges a file (`Judge.judge_name` on
the runtime built from the embedded defaults, `[ocr] enabled = true`): intake, OCR extractor, regex
detector, verdict.

A seeded value counts as found when a finding of its type has a box overlapping at least 30 % of where
the value was drawn. Seconds per page are wall time per judged file; "tesseract CPU" is the CPU time of
the tesseract processes (children of this one) per page.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dropwarden.config import Settings  # noqa: E402
from dropwarden.runtime import build_runtime  # noqa: E402
from tests.manga_pages import manga_panel, scan  # noqa: E402
from tests.ocr_pages import KINDS, Page, fonts_available, generated_page, noisy  # noqa: E402

ORIENTATIONS = ("horizontal", "vertical", "english", "manga", "mixed", "scan")


def plan(pages: int, seed: int) -> list[tuple[str, Page, str]]:
    """(file name, page, format) for each page; kinds cycle per orientation so each is seeded equally."""
    rnd = random.Random(seed)
    cycles = {o: 0 for o in ORIENTATIONS}
    out = []
    for index in range(pages):
        orientation = ORIENTATIONS[index % len(ORIENTATIONS)]
        clean = (index // len(ORIENTATIONS)) % 4 == 3
        kinds: list[str] = []
        if not clean:
            for _ in range(2):
                kinds.append(KINDS[cycles[orientation] % len(KINDS)])
                cycles[orientation] += 1
        if orientation in ("manga", "mixed"):
            page = manga_panel(rnd, kinds, mixed=orientation == "mixed")
        elif orientation == "scan":
            page = scan(rnd, kinds)
        else:
            page = generated_page(rnd, orientation, kinds)  # type: ignore[arg-type]
            if rnd.random() < 0.25:
                page = noisy(page, rnd)
        fmt = "JPEG" if orientation == "scan" or rnd.random() < 0.3 else "PNG"
        out.append((f"page{index:04d}.{fmt.lower().replace('jpeg', 'jpg')}", page, fmt))
    return out


def overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """The share of box `b` covered by box `a`."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    area = max(1, (b[2] - b[0]) * (b[3] - b[1]))
    return max(0, width) * max(0, height) / area


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not fonts_available():
        sys.exit("ocr_bench: needs fonts-noto-cjk and Pillow with libraqm")
    root = Path(tempfile.mkdtemp(prefix="ocr-bench-"))
    folder = Path(args.save) if args.save else root / "pages"
    folder.mkdir(parents=True, exist_ok=True)
    pages = plan(args.pages, args.seed)
    for name, page, fmt in pages:
        options = {"quality": 85 if page.orientation != "scan" else 60} if fmt == "JPEG" else {}
        (folder / name).write_bytes(page.encode(fmt, **options))
    limits = json.loads(args.limits)
    settings = Settings(
        state={"dir": root / "state"},
        ocr={"enabled": True, **json.loads(args.ocr)},
        **({"limits": limits} if limits else {}),
    )
    runtime = build_runtime(settings)
    extractor = runtime.registry.extractors["ocr-tesseract"]
    engine = extractor.engine
    print(f"judging {len(pages)} pages with tesseract {engine.version} ({engine.model})", file=sys.stderr)
    seconds: dict[str, list[float]] = defaultdict(list)
    found: Counter[tuple[str, str]] = Counter()
    seeded: Counter[tuple[str, str]] = Counter()
    misses: list[dict[str, Any]] = []
    clean_findings: list[dict[str, Any]] = []
    stray = 0
    unscanned: list[str] = []
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        runtime.judge.judge_name(fd, pages[0][0], pages[0][0])  # warm-up: imports, first process
        for name, page, _fmt in pages:
            started = time.perf_counter()
            judgement = runtime.judge.judge_name(fd, name, str(folder / name))
            seconds[page.orientation].append(time.perf_counter() - started)
            verdict = judgement.verdict
            if verdict.problems:
                unscanned.append(f"{name}: {verdict.reason}")
            findings = [f for f in verdict.findings if f.location.bbox is not None]
            matched: set[int] = set()
            for item in page.seeded:
                seeded[(page.orientation, item.kind)] += 1
                hits = [
                    i
                    for i, f in enumerate(findings)
                    if f.type == item.kind and overlap(f.location.bbox, item.box) >= 0.3  # type: ignore[arg-type]
                ]
                if hits:
                    found[(page.orientation, item.kind)] += 1
                    matched.update(hits)
                else:
                    misses.append({"page": name, "orientation": page.orientation, "kind": item.kind})
            extra = [f for i, f in enumerate(verdict.findings) if i not in matched]
            if not page.seeded:
                clean_findings += [
                    {"page": name, "layout": page.orientation, "type": f.type, "rule": f.rule}
                    for f in verdict.findings
                ]
            else:
                stray += len(extra)
    finally:
        os.close(fd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if args.misses:
        for miss in misses:
            data = (folder / miss["page"]).read_bytes()
            miss["ocr_text"] = extractor.read(data).text
    runtime.close()
    every = [s for values in seconds.values() for s in values]
    cpu = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) / len(pages)
    recall: dict[str, dict[str, Any]] = {}
    for orientation in (*ORIENTATIONS, "all"):
        row: dict[str, Any] = {}
        for kind in (*KINDS, "all"):
            keys = [
                (o, k)
                for o in ORIENTATIONS
                for k in KINDS
                if orientation in (o, "all") and kind in (k, "all")
            ]
            n, hit = sum(seeded[k] for k in keys), sum(found[k] for k in keys)
            row[kind] = {"found": hit, "seeded": n, "recall": round(hit / n, 4) if n else None}
        recall[orientation] = row
    return {
        "pages": len(pages),
        "clean_pages": sum(1 for _, p, _ in pages if not p.seeded),
        "engine": {"name": engine.name, "version": engine.version, "languages": engine.model},
        "cpus": os.cpu_count(),
        "seconds_per_page": _stats(every),
        "seconds_per_page_by_orientation": {o: _stats(v) for o, v in seconds.items()},
        "tesseract_cpu_seconds_per_page": round(cpu, 3),
        "recall": recall,
        "findings_on_clean_pages": clean_findings,
        "other_findings_on_seeded_pages": stray,
        "unscanned": unscanned,
        "misses": misses,
        "pages_dir": str(folder),
    }


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered), 3),
        "p50": round(statistics.median(ordered), 3),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 3),
        "max": round(ordered[-1], 3),
    }


def print_report(result: dict[str, Any]) -> None:
    engine = result["engine"]
    print(
        f"OCR benchmark: {result['pages']} pages ({result['clean_pages']} clean), tesseract"
        f" {engine['version']}, {engine['languages']}, {result['cpus']} CPUs"
    )
    s = result["seconds_per_page"]
    print(
        f"seconds/page: mean {s['mean']}  p50 {s['p50']}  p95 {s['p95']}  max {s['max']}"
        f"  (tesseract CPU {result['tesseract_cpu_seconds_per_page']} s/page)"
    )
    print_layouts(result)
    print("recall (right type, box overlapping where the value was drawn):")
    header = ["", *KINDS, "all"]
    print("  " + "".join(f"{h:>16}" for h in header))
    for orientation, row in result["recall"].items():
        cells = [
            f"{c['found']}/{c['seeded']} {100 * c['recall']:.0f}%" if c["seeded"] else "-"
            for c in (row[k] for k in (*KINDS, "all"))
        ]
        print("  " + f"{orientation:>16}" + "".join(f"{c:>16}" for c in cells))
    clean = result["findings_on_clean_pages"]
    print(
        f"findings on clean pages: {len(clean)}; other findings on seeded pages:"
        f" {result['other_findings_on_seeded_pages']}; unscanned: {len(result['unscanned'])}"
    )
    for line in result["unscanned"]:
        print(f"  unscanned {line}")
    for finding in clean:
        print(f"  clean-page finding {finding}")
    for miss in result["misses"]:
        text = miss.get("ocr_text")
        shown = f": {text!r}" if text is not None else ""
        print(f"  missed {miss['kind']} on {miss['page']} ({miss['orientation']}){shown}")


def print_layouts(result: dict[str, Any]) -> None:
    """The per-layout table: recall, findings on clean pages, mean and p95 seconds per page."""
    print(f"  {'layout':<11}{'recall':>14}{'clean FP':>10}{'mean s':>8}{'p95 s':>7}")
    timing = result["seconds_per_page_by_orientation"]
    for layout in (*ORIENTATIONS, "all"):
        cell = result["recall"][layout]["all"]
        fp = sum(1 for f in result["findings_on_clean_pages"] if layout in (f["layout"], "all"))
        s = result["seconds_per_page"] if layout == "all" else timing.get(layout, {"mean": 0, "p95": 0})
        shown = f"{cell['found']}/{cell['seeded']} {cell['recall'] or 0:.2f}"
        print(f"  {layout:<11}{shown:>14}{fp:>10}{s['mean']:>8}{s['p95']:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pages", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--misses", action="store_true", help="print the OCR text of pages with misses")
    parser.add_argument("--save", metavar="DIR", help="keep the generated pages in DIR")
    parser.add_argument(
        "--ocr",
        default="{}",
        metavar="JSON",
        help='[ocr] settings over the defaults, e.g. \'{"tesseract": {"vertical_reads": false}}\'',
    )
    parser.add_argument(
        "--limits",
        default="{}",
        metavar="JSON",
        help="[limits] over the defaults, e.g. '{\"detector_timeout\": 600}' on a loaded machine",
    )
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print_report(result)


if __name__ == "__main__":
    main()
