"""Run detectors over views, one call at a time, with a timeout and fault isolation per call."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterable
from dataclasses import dataclass

from dropwarden.findings import Finding
from dropwarden.registry import DetectContext, Detector
from dropwarden.verdict import Problem, Reason
from dropwarden.views import View


@dataclass(frozen=True)
class DetectorRun:
    """One detector on one view: how long it took and what came of it (for the audit record)."""

    detector: str
    version: str
    view: str
    duration_ms: float
    findings: tuple[Finding, ...] = ()
    problem: Problem | None = None

    def to_dict(self) -> dict:
        out: dict = {
            "detector": self.detector,
            "version": self.version,
            "view": self.view,
            "ms": round(self.duration_ms, 3),
            "findings": len(self.findings),
        }
        if self.problem:
            out["problem"] = str(self.problem)
        return out


class DetectorRunner:
    """Calls detectors in worker threads so a hung detector costs a timeout, not the caller.

    Python cannot kill a thread: a detector that never returns keeps its worker busy. The pool is
    therefore sized above the expected concurrency and a timed-out call is reported as `timeout`.
    """

    def __init__(self, timeout: float, workers: int = 4) -> None:
        self.timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="detector")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

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
        started = time.perf_counter()
        try:
            if getattr(detector, "bounded", False):
                findings = tuple(detector.detect(view, ctx))
            else:
                findings = tuple(self._pool.submit(detector.detect, view, ctx).result(timeout=self.timeout))
            problem = None
        except concurrent.futures.TimeoutError:
            findings, problem = (), Problem(Reason.TIMEOUT, f"no answer within {self.timeout:g}s", source)
        except Exception as exc:
            findings, problem = (), Problem(Reason.DETECTOR_ERROR, f"{type(exc).__name__}: {exc}", source)
        elapsed = (time.perf_counter() - started) * 1000
        return DetectorRun(detector.id, detector.version, view.name, elapsed, findings, problem)
