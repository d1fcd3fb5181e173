"""Regex benchmark: dropwarden's rule detector against Presidio's pattern recognizers and detect-secrets.

Generates (or reads back from `bench/out/`) a deterministic mixed corpus with sparse seeded PII and
secrets (see `corpus.py`), judges it ~1 MB chunk by chunk, single-threaded, in this one process, and
prints each engine's scan rate in MB/s per core, with a recall sanity line for dropwarden and verdicts
against the target (300 MB/s per core, faster than both peers). The peers are much slower, so they run
on a prefix of the same corpus (`--peer-mb`); a rate is a rate, but the output says so.

    .venv/bin/python bench/regex_bench.py [--mb 100] [--peer-mb 5] [--corpus current|issue|both] [--json]

`--corpus issue` measures on the corpus as it was when issue 15 was filed (only the families of the rule
set of then seeded, so the grown set has no more to report than the old one); `both` runs both corpora
and ends with the grown/old rate ratio on each.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Presidio's email recognizer validates domains with tldextract, which fetches the public-suffix list on
# first use. With no URLs it uses its bundled snapshot straight away instead of waiting on a network
# that is not there. Must be set before tldextract is imported.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("TLDEXTRACT_DEFAULT_FETCH_TIMEOUT", "2")

from corpus import MB, SEED_KINDS, Corpus, Seeded, load_or_build  # bench/ is sys.path[0]
from secret_seeds import SECRET_SEEDS

TARGET_MB_S = 300.0
OUT_DIR = Path(__file__).resolve().parent / "out"

# Which finding types count as detecting a seeded kind: a type matches when one of these appears in it as
# whole "_"-separated words (rule packs name types like EMAIL_ADDRESS, CREDIT_CARD, JP_MY_NUMBER).
KIND_TYPE_WORDS: dict[str, tuple[str, ...]] = {
    "email": ("EMAIL",),
    "phone": ("PHONE",),
    "card": ("CARD", "PAN"),
    "ssn": ("SSN",),
    "iban": ("IBAN",),
    "my_number": ("MY_NUMBER", "MYNUMBER", "INDIVIDUAL_NUMBER"),
    "aws_key": ("AWS",),
    "github_token": ("GITHUB",),
    "pem": ("PRIVATE_KEY", "PEM"),
    "jwt": ("JWT",),
    "jp_licence": ("DRIVERS_LICENSE",),
    "jp_passport": ("PASSPORT",),
    "jp_bank_account": ("BANK_ACCOUNT",),
    "jp_postal": ("POSTAL_CODE",),
    **{kind: words for kind, (words, _) in SECRET_SEEDS.items()},
}
# The rule set before the secret families grew (issue 15): the PII pack and these secret rules. The grown set
# is timed side by side with it in one run (`--no-baseline` skips that).
BASELINE_SECRET_RULES = (
    "secrets.aws_access_key", "secrets.github_token", "secrets.github_pat", "secrets.private_key",
    "secrets.jwt",
)  # fmt: skip

# Presidio recognizers that need no NLP model. The first five cover kinds the corpus seeds (and that
# dropwarden reports); the others are Presidio's further generic pattern recognizers.
PRESIDIO_OVERLAP = (
    "EmailRecognizer",
    "PhoneRecognizer",
    "CreditCardRecognizer",
    "UsSsnRecognizer",
    "IbanRecognizer",
)
PRESIDIO_EXTRA = ("CryptoRecognizer", "IpRecognizer", "UrlRecognizer")


@dataclass
class Run:
    """One engine's pass over (part of) the corpus."""

    engine: str
    status: str = "ok"  # "ok", "not installed", or "failed: ..."
    nbytes: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    setup_seconds: float = 0.0
    findings: Counter[str] = field(default_factory=Counter)
    detail: str = ""
    breakdown: dict[str, float] = field(default_factory=dict)  # part -> CPU seconds

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def mb(self) -> float:
        return self.nbytes / MB

    @property
    def rate(self) -> float:
        """MB/s per core: bytes over process CPU time. One thread on an idle machine gives CPU time equal
        to wall time; on a busy one wall time also counts waiting for a core, CPU time does not."""
        return self.mb / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    @property
    def wall_rate(self) -> float:
        return self.mb / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "status": self.status,
            "bytes": self.nbytes,
            "mb": round(self.mb, 3),
            "seconds": round(self.seconds, 4),
            "cpu_seconds": round(self.cpu_seconds, 4),
            "setup_seconds": round(self.setup_seconds, 4),
            "mb_per_s_per_core": round(self.rate, 3),
            "mb_per_s_wall": round(self.wall_rate, 3),
            "findings": sum(self.findings.values()),
            "findings_by_type": dict(sorted(self.findings.items())),
            "detail": self.detail,
            "breakdown_cpu_seconds": {k: round(v, 4) for k, v in self.breakdown.items()},
        }


@contextmanager
def timed(run: Run) -> Iterator[None]:
    """Add the block's wall and process CPU time to `run`."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        run.seconds += time.perf_counter() - wall
        run.cpu_seconds += time.process_time() - cpu


def _nbytes(chunks: list[str]) -> int:
    return sum(len(c.encode("utf-8")) for c in chunks)


# --- dropwarden ------------------------------------------------------------------------------------------


@dataclass
class Recall:
    seeded: Counter[str] = field(default_factory=Counter)
    found: Counter[str] = field(default_factory=Counter)
    unseeded_findings: Counter[str] = field(default_factory=Counter)  # findings overlapping no seeded item
    unlocated_findings: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "seeded": sum(self.seeded.values()),
            "found": sum(self.found.values()),
            "by_kind": {k: [self.found[k], self.seeded[k]] for k in SEED_KINDS if self.seeded[k]},
            "unseeded_findings_by_type": dict(sorted(self.unseeded_findings.items())),
            "unlocated_findings": self.unlocated_findings,
        }


class Harness:
    """Builds `RegexDetector`s from the default settings (`RulesSettings()`) and runs them over chunks,
    one `TextView` per chunk. Raises ImportError when dropwarden's regex plugin is not importable."""

    def __init__(self, engine: str | None) -> None:
        from dropwarden.redact import Fingerprinter
        from dropwarden.registry import DetectContext
        from dropwarden.views import TextView
        from dropwarden_regex.detector import RegexDetector
        from dropwarden_regex.settings import RulesSettings

        self._detector_class = RegexDetector
        self._view_class = TextView
        self.rules = RulesSettings()
        if engine:
            self.rules = self.rules.model_copy(update={"engine": engine})
        self.ctx = DetectContext(fingerprint=Fingerprinter(b"k" * 32))

    def detector(self, disable: list[str] | None = None) -> Any:
        """A detector (rules in `disable` switched off), warmed up on a short text."""
        rules = self.rules.model_copy(update={"disable": disable}) if disable else self.rules
        detector = self._detector_class(rules)
        self.scan(detector, ["warm-up a@example.com 4111 1111 1111 1111"])
        return detector

    def views(self, chunks: list[str]) -> list[Any]:
        """One text view per chunk, built as extraction builds them from a file's bytes (a UTF-8 file's
        view reuses its bytes; decoding is extraction's work, timed separately as `decode`)."""
        from dropwarden.judge.textdecode import decode_text

        views = []
        for chunk in chunks:
            decoded = decode_text(chunk.encode("utf-8"))
            if decoded.utf8 is not None:
                views.append(self._view_class.from_utf8("text", decoded.text, decoded.utf8))
            else:
                views.append(self._view_class("text", decoded.text, decoded.encoding))
        return views

    def scan(self, detector: Any, chunks: list[str]) -> list[list[Any]]:
        return self.judge(detector, self.views(chunks))

    def judge(self, detector: Any, views: list[Any]) -> list[list[Any]]:
        return [detector.detect(view, self.ctx) for view in views]


def engine_floor(detector: Any, views: list[Any]) -> Run:
    """The hyperscan database alone over every view, no callbacks: what any engine built on these
    rules' expressions costs before a single candidate is confirmed (an upper bound on the rate)."""
    run = Run("hyperscan prefilter alone")
    engine = getattr(detector, "engine", None)
    database = getattr(engine, "_precise", None)
    if database is None:
        run.status = "not applicable (engine is not hyperscan)"
        return run
    scratch = engine._scratch(database)
    with timed(run):
        for view in views:
            database.db.scan(view.utf8, match_event_handler=None, scratch=scratch)
    run.nbytes = sum(len(view.utf8) for view in views)
    run.detail = f"{database.expression_count} expressions (the precise database)"
    return run


def time_decode(chunks: list[str]) -> Run:
    """Extraction's share: decoding each chunk's bytes (UTF-8 detection), for the record."""
    from dropwarden.judge.textdecode import decode_text

    data = [chunk.encode("utf-8") for chunk in chunks]
    run = Run("decode (extraction)")
    with timed(run):
        for item in data:
            decode_text(item)
    run.nbytes = sum(map(len, data))
    return run


def run_dropwarden(
    harness: Harness,
    chunks: list[str],
    repeat: int,
    disable: list[str] | None = None,
    name: str = "dropwarden",
) -> tuple[Run, list[list[Any]]]:
    """Time the detector (rules in `disable` off) over every chunk; the median of `repeat` passes is
    reported."""
    return run_interleaved(harness, chunks, repeat, [(name, disable)])[0]


def run_interleaved(
    harness: Harness, chunks: list[str], repeat: int, configurations: list[tuple[str, list[str] | None]]
) -> list[tuple[Run, list[list[Any]]]]:
    """Time several detectors, each (name, rules disabled), over every chunk, their passes taken in turn
    (A B A B ...) so that a load that changes during the run weighs on each alike; each reports the
    median of its `repeat` passes."""
    runs, detectors = [], []
    for name, disable in configurations:
        run = Run(name)
        start = time.perf_counter()
        detectors.append(harness.detector(disable))
        run.setup_seconds = time.perf_counter() - start
        run.detail = _describe_detector(detectors[-1])
        runs.append(run)
    views = harness.views(chunks)
    passes: list[list[tuple[float, float]]] = [[] for _ in runs]
    results: list[list[list[Any]]] = [[] for _ in runs]
    for i in range(max(1, repeat)):
        for n, detector in enumerate(detectors):
            this = Run("pass")
            with timed(this):
                out = harness.judge(detector, views)
            passes[n].append((this.seconds, this.cpu_seconds))
            if i == 0:
                results[n] = out
            del out
    for run, timings, found in zip(runs, passes, results, strict=True):
        run.seconds = statistics.median(p[0] for p in timings)
        run.cpu_seconds = statistics.median(p[1] for p in timings)
        if len(timings) > 1:
            run.breakdown = {f"pass{i + 1}": p[1] for i, p in enumerate(timings)}
        run.nbytes = _nbytes(chunks)
        run.findings = Counter(f.type for per_chunk in found for f in per_chunk)
    return list(zip(runs, results, strict=True))


def _describe_detector(detector: Any) -> str:
    name = getattr(getattr(detector, "engine", None), "name", None)
    parts = [f"engine={name if isinstance(name, str) else '?'}"]
    rules = getattr(detector, "rules", None)
    if isinstance(rules, list):
        parts.append(f"{len(rules)} rules")
    version = getattr(detector, "version", None)
    if version:
        parts.append(f"version={version}")
    return ", ".join(parts)


def per_rule_costs(harness: Harness, chunks: list[str]) -> list[tuple[str, float]]:
    """Each rule alone (every other rule disabled through `rules.disable`): (rule id, CPU ms per MB),
    costliest first. Each figure includes the fixed per-view cost, so they do not add up."""
    ids = [rule.id for rule in harness.detector().rules]
    mb = _nbytes(chunks) / MB
    costs = []
    for rule_id in ids:
        detector = harness.detector(disable=[i for i in ids if i != rule_id])
        run = Run(rule_id)
        with timed(run):
            harness.scan(detector, chunks)
        costs.append((rule_id, 1000 * run.cpu_seconds / mb))
    return sorted(costs, key=lambda item: -item[1])


def confirmation_costs(harness: Harness, chunks: list[str]) -> list[tuple[str, float, float, float, float]]:
    """One pass of the full detector with its per-rule work counted: (rule id, confirmation windows per
    MB, kB of them per MB, ms per MB confirming them, ms per MB in the rule's validator), costliest
    first. Wraps the hyperscan engine's `confirm_regions` and the engine's validators for the pass."""
    import dropwarden_regex.hyperscan_engine as hyperscan_engine

    detector = harness.detector()
    engine = detector.engine
    views = harness.views(chunks)
    windows: Counter[int] = Counter()
    window_bytes: Counter[int] = Counter()
    confirming: Counter[int] = Counter()
    validating: Counter[int] = Counter()
    confirm = hyperscan_engine.confirm_regions

    def counted_confirm(finditer: Any, index: int, regions: list[tuple[int, int, int]], *rest: Any) -> int:
        start = time.perf_counter()
        try:
            return confirm(finditer, index, regions, *rest)
        finally:
            confirming[index] += time.perf_counter() - start
            windows[index] += len(regions)
            window_bytes[index] += sum(end - begin for begin, _, end in regions)

    def counted_validator(index: int, check: Callable[[Any], bool]) -> Callable[[Any], bool]:
        def run(value: Any) -> bool:
            start = time.perf_counter()
            try:
                return check(value)
            finally:
                validating[index] += time.perf_counter() - start

        return run

    validators = dict(getattr(engine, "_validators", {}))
    hyperscan_engine.confirm_regions = counted_confirm
    engine._validators.update({index: counted_validator(index, check) for index, check in validators.items()})
    try:
        harness.judge(detector, views)
    finally:
        hyperscan_engine.confirm_regions = confirm
        engine._validators.update(validators)
    mb = _nbytes(chunks) / MB
    rows = [
        (rule.id, windows[i] / mb, window_bytes[i] / mb / 1000, 1000 * confirming[i] / mb,
         1000 * validating[i] / mb)
        for i, rule in enumerate(detector.rules)
    ]  # fmt: skip
    return sorted(rows, key=lambda row: -(row[3] + row[4]))


def measure_recall(seeded: list[Seeded], results: list[list[Any]]) -> Recall:
    """A seeded item counts as found when a finding of a matching type overlaps its span."""
    recall = Recall()
    by_chunk: dict[int, list[Seeded]] = {}
    for item in seeded:
        recall.seeded[item.kind] += 1
        by_chunk.setdefault(item.chunk, []).append(item)
    for index, findings in enumerate(results):
        items = by_chunk.get(index, [])
        hit: set[int] = set()
        for finding in findings:
            loc = finding.location
            if loc.offset is None:
                recall.unlocated_findings += 1
                continue
            start, end = loc.offset, loc.offset + max(1, loc.length or 1)
            overlapping = False
            for n, item in enumerate(items):
                if start < item.end and item.start < end:
                    overlapping = True
                    if _type_matches(finding.type, item.kind):
                        hit.add(n)
            if not overlapping:
                recall.unseeded_findings[finding.type] += 1
        for n in hit:
            recall.found[items[n].kind] += 1
    return recall


def _type_matches(finding_type: str, kind: str) -> bool:
    padded = f"_{finding_type.upper()}_"
    return any(f"_{word}_" in padded for word in KIND_TYPE_WORDS[kind])


# --- peers -------------------------------------------------------------------------------------------------


def run_presidio(chunks: list[str]) -> list[Run]:
    """Each recognizer's own analyze() with nlp_artifacts=None: no spaCy model, no AnalyzerEngine."""
    try:
        from presidio_analyzer import predefined_recognizers
    except ImportError:
        return [Run("presidio", status="not installed")]

    start = time.perf_counter()
    recognizers = {
        name: getattr(predefined_recognizers, name)() for name in PRESIDIO_OVERLAP + PRESIDIO_EXTRA
    }
    for recognizer in recognizers.values():  # warm-up: compile patterns, load the suffix-list snapshot
        recognizer.analyze("mail a@example.com", recognizer.supported_entities, None)
    setup = time.perf_counter() - start

    per: dict[str, Run] = {name: Run(name) for name in recognizers}
    for chunk in chunks:
        for name, recognizer in recognizers.items():
            with timed(per[name]):
                results = recognizer.analyze(chunk, recognizer.supported_entities, None)
            per[name].findings.update(r.entity_type for r in results)

    nbytes = _nbytes(chunks)
    runs = []
    for label, names in (
        ("presidio (overlapping types)", PRESIDIO_OVERLAP),
        ("presidio (all 8)", tuple(per)),
    ):
        run = Run(label, nbytes=nbytes, setup_seconds=setup)
        for name in names:
            run.seconds += per[name].seconds
            run.cpu_seconds += per[name].cpu_seconds
            run.findings.update(per[name].findings)
            run.breakdown[name] = per[name].cpu_seconds
        run.detail = ", ".join(n.removesuffix("Recognizer") for n in names)
        runs.append(run)
    return runs


def run_detect_secrets(chunks: list[str]) -> Run:
    """detect-secrets' own line pipeline (what scan_file runs after reading a file): default plugins and
    filters, line by line, with its code-snippet context."""
    run = Run("detect-secrets")
    try:
        from detect_secrets.core.scan import _process_line_based_plugins
        from detect_secrets.settings import default_settings, get_plugins
    except ImportError:
        run.status = "not installed"
        return run

    with default_settings():
        start = time.perf_counter()
        plugins = get_plugins()
        list(_process_line_based_plugins([(1, "warm-up = 'AKIAABCDEFGHIJKLMNOP'")], filename="warmup.txt"))
        run.setup_seconds = time.perf_counter() - start
        run.detail = f"{len(plugins)} default plugins"
        for index, chunk in enumerate(chunks):
            with timed(run):
                lines = list(enumerate(chunk.splitlines(), start=1))
                secrets = list(_process_line_based_plugins(lines, filename=f"chunk-{index:04d}.txt"))
            run.findings.update(s.type for s in secrets)
    run.nbytes = _nbytes(chunks)
    return run


# --- report ------------------------------------------------------------------------------------------------


def verdicts(ours: Run, peers: dict[str, Run]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "target_mb_per_s_per_core": TARGET_MB_S,
        "meets_target": ours.ok and ours.rate >= TARGET_MB_S,
    }
    for key, peer in peers.items():
        if ours.ok and peer.ok and peer.rate > 0:
            out[f"faster_than_{key}"] = ours.rate > peer.rate
            out[f"speedup_vs_{key}"] = round(ours.rate / peer.rate, 1)
        else:
            out[f"faster_than_{key}"] = None
            out[f"speedup_vs_{key}"] = None
    return out


def print_report(
    corpus: Corpus,
    ours: Run,
    recall: Recall | None,
    peer_runs: list[Run],
    peer_bytes: int,
    judged: dict[str, Any],
    costs: list[tuple[str, float]],
    references: list[Run] = (),  # type: ignore[assignment]
) -> None:
    print(
        f"corpus: {corpus.nbytes / MB:.1f} MB in {len(corpus.chunks)} chunks, "
        f"{len(corpus.seeded)} seeded items ({'generated' if corpus.built else 'cached'}: {corpus.path})"
    )
    print(
        f"single thread, one process; python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; MB = 10^6 bytes of UTF-8 text"
    )
    if peer_runs:
        print(
            f"peers measured on a prefix: the first {peer_bytes / MB:.1f} MB of the same corpus (--peer-mb)"
        )
    print()
    columns = ("MB", 7), ("wall s", 8), ("CPU s", 8), ("MB/s wall", 10), ("MB/s/core", 10), ("findings", 9)
    header = f"{'engine':<30}" + "".join(f" {name:>{width}}" for name, width in columns)
    print(header)
    print("-" * len(header))
    for run in (ours, *peer_runs):
        if run.ok:
            print(
                f"{run.engine:<30} {run.mb:>7.1f} {run.seconds:>8.3f} {run.cpu_seconds:>8.3f} "
                f"{run.wall_rate:>10.2f} {run.rate:>10.2f} {sum(run.findings.values()):>9}"
            )
        else:
            print(f"{run.engine:<30} {run.status}")
    for run in references:
        if run.ok:
            print(
                f"  ({run.engine:<26} {run.mb:>7.1f} {run.seconds:>8.3f} {run.cpu_seconds:>8.3f} "
                f"{run.wall_rate:>10.2f} {run.rate:>10.2f})"
            )
    if references:
        print(
            "  (in brackets, for reference, over the whole corpus: the rule set before the secret"
            " families grew, timed the same way; the rules' hyperscan database scanned"
            " alone, no match confirmed, bounds any engine on these expressions; decoding is extraction's"
            " share, not part of the detector's rate)"
        )
    print()
    if ours.ok:
        passes = ", ".join(f"{v:.3f}" for v in ours.breakdown.values())
        print(
            f"dropwarden: {ours.detail}; setup {ours.setup_seconds:.2f} s"
            + (f"; CPU s per pass: {passes}" if passes else "")
        )
        print("dropwarden findings by type: " + _counts(ours.findings))
    if recall is not None:
        total_found, total_seeded = sum(recall.found.values()), sum(recall.seeded.values())
        per_kind = ", ".join(
            f"{k} {recall.found[k]}/{recall.seeded[k]}" for k in SEED_KINDS if recall.seeded[k]
        )
        pct = 100 * total_found / total_seeded if total_seeded else 0.0
        print(f"dropwarden recall of seeded items: {total_found}/{total_seeded} ({pct:.1f}%): {per_kind}")
        unseeded = sum(recall.unseeded_findings.values())
        line = f"dropwarden findings on unseeded text: {unseeded}"
        if unseeded:
            line += " (" + _counts(recall.unseeded_findings) + ")"
        if recall.unlocated_findings:
            line += f"; without an offset: {recall.unlocated_findings}"
        print(line)
    if costs:
        budget = 1000 / TARGET_MB_S
        print(
            f"dropwarden, each rule alone (ms per MB; the target allows {budget:.2f} for all rules together):"
        )
        print("  " + ", ".join(f"{rule} {ms:.2f}" for rule, ms in costs))
    for run in peer_runs:
        if run.ok:
            setup = f"setup {run.setup_seconds:.2f} s"
            print(f"{run.engine}: {run.detail}; {setup}; findings: {_counts(run.findings)}")
            if run.breakdown:
                parts = ", ".join(
                    f"{k.removesuffix('Recognizer')} {run.mb / v:.2f}" for k, v in run.breakdown.items()
                )
                print(f"  MB/s/core by recognizer: {parts}")
    print()
    measured = f"{ours.rate:.1f} MB/s/core" if ours.ok else ours.status
    print(f"dropwarden ≥ {TARGET_MB_S:g} MB/s/core: {_yes(judged['meets_target'])} ({measured})")
    for key, label in (("presidio", "presidio"), ("detect_secrets", "detect-secrets")):
        faster, speedup = judged.get(f"faster_than_{key}"), judged.get(f"speedup_vs_{key}")
        if faster is None:
            print(f"faster than {label}: n/a")
        else:
            print(f"faster than {label}: {_yes(faster)} ({speedup:g}x)")


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mb", type=float, default=100.0, help="corpus size in MB (10^6 bytes), default 100")
    parser.add_argument("--peer-mb", type=float, default=5.0, help="prefix the peers scan, default 5 MB")
    parser.add_argument("--seed", type=int, default=1, help="corpus generator seed")
    parser.add_argument("--chunk-kb", type=int, default=1000, help="chunk (one judged file) size in kB")
    parser.add_argument("--repeat", type=int, default=3, help="dropwarden passes; the median is reported")
    parser.add_argument("--engine", choices=("auto", "hyperscan", "python"), help="override rules.engine")
    parser.add_argument("--no-peers", action="store_true", help="skip Presidio and detect-secrets")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip timing the rule set before the secret families grew"
    )
    parser.add_argument(
        "--per-rule",
        action="store_true",
        help="also time each dropwarden rule alone (ms per MB) on the corpus",
    )
    parser.add_argument(
        "--confirmations",
        action="store_true",
        help="also count each rule's confirmation windows and validator time in one pass (costliest first)",
    )
    parser.add_argument("--rebuild", action="store_true", help="regenerate the corpus even if cached")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="corpus cache folder")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    parser.add_argument(
        "--corpus",
        choices=("current", "issue", "both"),
        default="current",
        help="the corpus seeding every family (current), the one of issue 15's filing (issue), or both",
    )
    args = parser.parse_args(argv)
    kinds = {"current": (False,), "issue": (True,), "both": (False, True)}[args.corpus]
    ratios = []
    for issue_time in kinds:
        ratio = run_corpus(args, issue_time, with_peers=issue_time == kinds[0])
        if ratio is not None:
            ratios.append((issue_time, ratio))
    if len(ratios) > 1 and not args.json:
        print()
        print(
            "grown / old rule set, MB/s/core: "
            + "; ".join(f"{_corpus_name(issue)} corpus {ratio:.2f}" for issue, ratio in ratios)
        )
    return 0


def _corpus_name(issue_time: bool) -> str:
    return "issue-time" if issue_time else "current"


def run_corpus(args: argparse.Namespace, issue_time: bool, with_peers: bool) -> float | None:
    """Measure and print one corpus; returns the grown/old rule set rate ratio (None without a baseline)."""
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"corpus: {args.mb:g} MB, seed {args.seed}, {_corpus_name(issue_time)} ...")
    corpus = load_or_build(
        args.mb, args.seed, args.out, args.chunk_kb * 1000, rebuild=args.rebuild, issue_time=issue_time
    )
    if not args.json:
        print(f"=== {_corpus_name(issue_time)} corpus ===")

    log(f"dropwarden: {args.repeat} pass(es) over {len(corpus.chunks)} chunks ...")
    baseline_recall: Recall | None = None
    ratio: float | None = None
    recall: Recall | None = None
    costs: list[tuple[str, float]] = []
    references: list[Run] = []
    try:
        harness = Harness(args.engine)
    except ImportError as exc:
        ours = Run("dropwarden", status=f"not installed ({exc})")
    else:
        if args.no_baseline:
            ours, results = run_dropwarden(harness, corpus.chunks, args.repeat)
        else:
            log("dropwarden: and the rule set before the secret families grew, passes in turn ...")
            ids = [rule.id for rule in harness.detector().rules]
            old_off = [i for i in ids if i.startswith("secrets.") and i not in BASELINE_SECRET_RULES]
            both = [("dropwarden", None), ("dropwarden (old rules)", old_off)]
            timed_runs = run_interleaved(harness, corpus.chunks, args.repeat, both)
            (ours, results), (baseline, old_results) = timed_runs
            baseline.detail += f"; {len(old_off)} newer secret rules off"
            references.append(baseline)
            baseline_recall = measure_recall(corpus.seeded, old_results)
            ratio = ours.rate / baseline.rate if ours.ok and baseline.rate else None
        recall = measure_recall(corpus.seeded, results)
        log("dropwarden: the hyperscan database alone, and decoding ...")
        floor = engine_floor(harness.detector(), harness.views(corpus.chunks))
        references += [floor, time_decode(corpus.chunks)]
        del results
        if args.per_rule:
            log("dropwarden: each rule alone ...")
            costs = per_rule_costs(harness, corpus.chunks)

    peer_runs: list[Run] = []
    peer_chunks = [] if args.no_peers or not with_peers else corpus.prefix(int(args.peer_mb * MB))
    if peer_chunks:
        log(f"presidio: {len(peer_chunks)} chunks ...")
        presidio_runs = run_presidio(peer_chunks)
        log(f"detect-secrets: {len(peer_chunks)} chunks ...")
        secrets_run = run_detect_secrets(peer_chunks)
        peer_runs = [*presidio_runs, secrets_run]
        judged = verdicts(ours, {"presidio": presidio_runs[0], "detect_secrets": secrets_run})
    else:
        judged = verdicts(ours, {})
    peer_bytes = _nbytes(peer_chunks)

    if args.json:
        report = {
            "corpus": {
                "path": str(corpus.path),
                "bytes": corpus.nbytes,
                "chunks": len(corpus.chunks),
                "seed": args.seed,
                "seeded_items": len(corpus.seeded),
            },
            "peer_prefix_bytes": peer_bytes,
            "runs": [r.to_json() for r in (ours, *peer_runs)],
            "references": [r.to_json() for r in references],
            "recall": recall.to_json() if recall else None,
            "recall_old_rules": baseline_recall.to_json() if baseline_recall else None,
            "issue_time_corpus": issue_time,
            "grown_over_old_rate": ratio,
            "per_rule_ms_per_mb": {rule: round(ms, 3) for rule, ms in costs},
            "verdict": judged,
        }
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(corpus, ours, recall, peer_runs, peer_bytes, judged, costs, references)
        if baseline_recall is not None:
            unseeded = baseline_recall.unseeded_findings
            found, seeded = sum(baseline_recall.found.values()), sum(baseline_recall.seeded.values())
            print(
                f"old rule set: recall {found}/{seeded}, findings on unseeded text "
                f"{sum(unseeded.values())} ({_counts(unseeded)}); grown/old rate "
                + (f"{ratio:.2f}" if ratio is not None else "n/a")
            )
    if args.confirmations and recall is not None:
        print("\nper rule, one pass: windows/MB, kB confirmed/MB, ms/MB confirming, ms/MB validating")
        for rule_id, count, kb, confirm_ms, validate_ms in confirmation_costs(harness, corpus.chunks)[:20]:
            print(f"  {rule_id:40s} {count:7.0f} {kb:8.1f} {confirm_ms:7.2f} {validate_ms:7.2f}")
    if not args.json:
        print()
    return ratio


if __name__ == "__main__":
    sys.exit(main())
