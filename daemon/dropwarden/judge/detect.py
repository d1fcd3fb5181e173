"""Run detectors over views, one call at a time, with a timeout and fault isolation per call."""

from __future__ import annotations

import bisect
import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from dropwarden.findings import Finding, FindingLimits, Findings, FindingTally, bbox_union
from dropwarden.judge.turn import LARGE_FILE_BYTES, without_turn, without_turn_if
from dropwarden.registry import DetectContext, Detector, Incomplete
from dropwarden.verdict import Problem, Reason
from dropwarden.views import ANCHOR_STEPS, ImageView, View

if TYPE_CHECKING:
    from dropwarden.config import LimitsSettings

# Trailing bytes after an image read into its text view when no [limits] are given.
DEFAULT_MAX_TRAILING_BYTES = 16 * 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class DetectorRun:
    """One detector on one view: how long it took and what came of it (for the audit record).
    `findings` holds those kept within the limits; its `omitted` counts the others."""

    detector: str
    version: str
    view: str
    duration_ms: float
    findings: Findings = field(default_factory=Findings)
    problem: Problem | None = None

    def to_dict(self) -> dict:
        out: dict = {
            "detector": self.detector,
            "version": self.version,
            "view": self.view,
            "ms": round(self.duration_ms, 3),
            "findings": self.findings.total,
        }
        if self.findings.omitted:
            out["kept"] = len(self.findings)
        if self.problem:
            out["problem"] = str(self.problem)
        return out


class DetectorRunner:
    """Calls detectors in worker threads so a hung detector costs a timeout, not the caller.

    Python cannot kill a thread: a detector that never returns keeps its worker busy. The pool is
    therefore sized above the expected concurrency and a timed-out call is reported as `timeout`.
    """

    def __init__(self, timeout: float, workers: int = 4, limits: LimitsSettings | None = None) -> None:
        self.timeout = timeout
        if limits is None:
            self.finding_limits = FindingLimits()
            self.max_trailing_bytes = DEFAULT_MAX_TRAILING_BYTES
        else:
            self.finding_limits = FindingLimits(
                limits.max_findings_per_type, limits.max_findings, limits.max_findings_counted
            )
            self.max_trailing_bytes = int(limits.max_trailing_bytes)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="detector")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def call(self, fn: Callable[..., T], *args: Any, inline: bool = False) -> T:
        """`fn(*args)` in a worker thread, waited for at most `timeout` seconds (TimeoutError beyond);
        `inline` calls it in the caller's thread instead (for work bounded by construction)."""
        if inline:
            return fn(*args)
        future = self._pool.submit(fn, *args)
        with without_turn():
            return future.result(timeout=self.timeout)

    def timed_out(self, source: str) -> Problem:
        """The problem for a call that gave no answer within the timeout."""
        return Problem(Reason.TIMEOUT, f"no answer within {self.timeout:g}s", source)

    def run(
        self, detectors: Iterable[Detector], views: Iterable[View], ctx: DetectContext
    ) -> list[DetectorRun]:
        runs: list[DetectorRun] = []
        for view in views:
            for detector in detectors:
                if view.kind in detector.view_kinds:
                    runs.append(self._run_one(detector, view, ctx))
        return runs

    def _run_one(self, detector: Detector, view: View, ctx: DetectContext) -> DetectorRun:
        source = f"detector {detector.id} on {view.name}"
        # A file's name is short (PATH_MAX) and every match in it must be known to redact it: uncapped.
        limits = None if view.provenance.get("source") == "name" else self.finding_limits
        if ctx.limits != limits:
            ctx = dataclasses.replace(ctx, limits=limits)
        started = time.perf_counter()
        problem = None
        try:
            bounded = getattr(detector, "bounded", False)
            with without_turn_if(bounded and _large(view)):  # a document's text can be far larger than it
                found: Iterable[Finding] = self.call(detector.detect, view, ctx, inline=bounded)
        except Incomplete as exc:  # part of the view judged: its findings stand, with the problem
            found, problem = exc.results, Problem.from_exception(exc, source)
        except concurrent.futures.TimeoutError:
            found, problem = (), self.timed_out(source)
        except Exception as exc:
            found, problem = (), Problem(Reason.DETECTOR_ERROR, f"{type(exc).__name__}: {exc}", source)
        findings = cap(found, limits)
        if findings and ("bbox" in view.provenance or "boxes" in view.provenance):
            findings = Findings((locate(finding, view) for finding in findings), findings.omitted)
        if findings and "within" in view.provenance:
            anchors = view.provenance.get("anchors") or ()
            # packed anchors (a sheet's cells) carry their starts already: a list of 100,000s costs 0.2 s
            starts = getattr(anchors, "starts", None) or [anchor[0] for anchor in anchors]
            findings = Findings((place(f, view, anchors, starts) for f in findings), findings.omitted)
        elapsed = (time.perf_counter() - started) * 1000
        return DetectorRun(detector.id, detector.version, view.name, elapsed, findings, problem)


def _large(view: View) -> bool:
    """Whether judging `view` takes long enough to be done without the turn (`dropwarden.judge.turn`)."""
    size = len(view.data) if isinstance(view, ImageView) else len(view.sliceable)
    return size > LARGE_FILE_BYTES


def cap(found: Iterable[Finding], limits: FindingLimits | None) -> Findings:
    """A detector's findings within `limits` (None: all), counting those it made but did not build."""
    if limits is None:
        return found if isinstance(found, Findings) else Findings(found)
    if isinstance(found, Findings) and not found and not found.omitted:
        return found  # nothing to cap (a clean view, the common case): no tally to build
    # the count of a type stops at `counted` per view in a detector that honours it; here it goes on
    tally = FindingTally(limits)
    tally.add_all(found)
    return tally.findings()


def place(
    finding: Finding, view: View, anchors: Sequence[tuple[int, int, str]], starts: Sequence[int]
) -> Finding:
    """Give a finding in a view from inside a container its path there: the view's provenance `within`
    (members outer to inner, the part, the page, ...), then the label of the anchor its text offset
    falls in, from provenance `anchors` (`starts`: their starts): (start, end, label) character ranges
    in order ("cell B2"; a label of several steps, "slide 2\x1fnotes", adds each: `ANCHOR_STEPS`)."""
    within = tuple(view.provenance["within"])
    offset = finding.location.offset
    index = bisect.bisect_right(starts, offset) - 1 if offset is not None else -1
    if index >= 0 and offset < anchors[index][1]:  # type: ignore[operator]
        within = (*within, *anchors[index][2].split(ANCHOR_STEPS))
    return dataclasses.replace(finding, location=dataclasses.replace(finding.location, within=within))


def locate(finding: Finding, view: View) -> Finding:
    """Give a finding in a text view read from an image (OCR) the bounding box of what it matched.

    Such a view's provenance holds `bbox`, the box of all its text, and may hold `boxes`: (start, end,
    bbox) character ranges of the text in order (the words the engine read). A finding with a text
    offset gets the union of the boxes its span overlaps; one without, the whole view's box. A box
    the detector set itself is kept.
    """
    location = finding.location
    if location.bbox is not None:
        return finding
    covered = []
    boxes = view.provenance.get("boxes") or ()
    if location.offset is not None and boxes:
        start = location.offset
        end = start + max(location.length or 0, 1)
        for box_start, box_end, part in boxes:
            if box_start >= end:
                break
            if box_end > start:
                covered.append(part)
    box = bbox_union(covered) if covered else view.provenance.get("bbox")
    if box is None:
        return finding
    left, top, right, bottom = (int(v) for v in box)
    located = dataclasses.replace(location, bbox=(left, top, right, bottom))
    return dataclasses.replace(finding, location=located)
