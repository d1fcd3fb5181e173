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


def operator_release(watch: WatchSettings, decision: Decision, *, have_bytes: bool = True) -> Decision:
    """An operator restored this file here from quarantine (once, same content): record the findings, do
    not act again. A file never read is left where it is (only judged bytes are released)."""
    release = ("release",) if watch.release_to and have_bytes else ()
    return Decision("operator_released", release, decision.acting_findings)


def unrecorded(watch: WatchSettings) -> Decision:
    """A judgement that could not be recorded (or judging that failed) is a file not judged: unscanned,
    acted on as `on_unscanned` says."""
    return Decision("unscanned", tuple(watch.on_unscanned))
