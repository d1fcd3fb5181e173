"""Policy: a watch's rules turn a verdict into actions. Errors are never treated as clean."""

from __future__ import annotations

from dataclasses import dataclass

from dropwarden.config import WatchSettings
from dropwarden.findings import Finding, Severity
from dropwarden.verdict import Verdict, VerdictKind


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


def operator_release(watch: WatchSettings, decision: Decision) -> Decision:
    """An operator restored this exact content from quarantine: record the findings, do not act again."""
    return Decision("operator_released", ("release",) if watch.release_to else (), decision.acting_findings)
