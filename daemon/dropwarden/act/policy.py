"""Policy: a watch's rules turn a verdict into actions. Errors are never treated as clean."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dropwarden.config import WatchSettings
from dropwarden.findings import Finding, Severity
from dropwarden.verdict import Problem, Reason, Verdict, VerdictKind

if TYPE_CHECKING:
    from dropwarden.judge.detect import DetectorRun
    from dropwarden.registry import Detector


@dataclass(frozen=True)
class Decision:
    """What to do with a judged file; `outcome` is what the audit record calls it."""

    outcome: str  # "finding", "unscanned", "clean", "below_threshold"
    actions: tuple[str, ...]  # subset of ("quarantine", "alert", "release")
    acting_findings: tuple[Finding, ...] = ()


def decide(watch: WatchSettings, verdict: Verdict) -> Decision:
    threshold = Severity.parse(watch.min_severity)
    acting = tuple(f for f in verdict.findings if f.severity >= threshold)
    if acting:
        return Decision("finding", tuple(watch.on_finding), acting)
    if verdict.problems:
        # A finding below the threshold plus a problem is still a file we could not fully judge.
        return Decision("unscanned", tuple(watch.on_unscanned))
    outcome = "below_threshold" if verdict.kind is VerdictKind.FINDING else "clean"
    return Decision(outcome, ("release",) if watch.release_to else ())


def require(
    watch: WatchSettings,
    verdict: Verdict,
    file_kind: str | None,
    runs: Iterable[DetectorRun],
    detectors: Mapping[str, Detector],
) -> Verdict:
    """The verdict with a `required_detector_missing` problem for each detector in `watch.require` whose
    view kinds include `file_kind` and that judged no view of the file without a problem (one that ran
    and failed has already put its own problem in the verdict). A required detector that is not loaded
    says nothing of its kinds (the core knows no plugin's detectors by name), so no file passes without
    it: fail-closed, and `config check` warns."""
    runs = list(runs)
    added: list[Problem] = []
    for detector_id in watch.require:
        loaded = detectors.get(detector_id)
        kinds = loaded.view_kinds if loaded is not None else None
        if file_kind is None or (kinds is not None and file_kind not in kinds):
            continue
        if any(run.detector == detector_id for run in runs):
            continue  # judged it, or failed with its own problem (already in the verdict)
        why = "not loaded" if loaded is None else "judged no view of it"
        added.append(Problem(Reason.REQUIRED_MISSING, f"{detector_id} {why}", "policy"))
    if not added:
        return verdict
    kind = VerdictKind.FINDING if verdict.kind is VerdictKind.FINDING else VerdictKind.UNSCANNED
    return dataclasses.replace(verdict, kind=kind, problems=(*verdict.problems, *added))


def operator_release(watch: WatchSettings, decision: Decision, *, have_bytes: bool = True) -> Decision:
    """An operator restored this file here from quarantine (once, same content): record the findings, do
    not act again. A file never read is left where it is (only judged bytes are released)."""
    release = ("release",) if watch.release_to and have_bytes else ()
    return Decision("operator_released", release, decision.acting_findings)


def unrecorded(watch: WatchSettings) -> Decision:
    """A judgement that could not be recorded (or judging that failed) is a file not judged: unscanned,
    acted on as `on_unscanned` says."""
    return Decision("unscanned", tuple(watch.on_unscanned))
