"""Verdicts and their monotonic combination: findings are never cleared, errors are never "clean"."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from dropwarden.findings import Finding, FindingLimits, FindingTally, Omitted, TypeCount


class VerdictKind(StrEnum):
    CLEAN = "clean"
    FINDING = "finding"
    UNSCANNED = "unscanned"


class Reason(StrEnum):
    """Why (part of) a file could not be judged."""

    UNREADABLE = "unreadable"
    VANISHED = "vanished"  # gone before it could be read: nothing left to judge or record
    TOO_LARGE = "too_large"
    DECODE_ERROR = "decode_error"
    DETECTOR_ERROR = "detector_error"
    TIMEOUT = "timeout"
    NOT_REGULAR = "not_regular"
    SYMLINK = "symlink"
    HARD_LINKED = "hard_linked"
    CHANGED = "changed_while_reading"
    UNSUPPORTED = "unsupported_type"
    ENCRYPTED = "encrypted"  # a document or member that cannot be read without a password
    REQUIRED_MISSING = "required_detector_missing"  # a detector the watch requires did not judge it
    JUDGE_FAILED = "judge_failed"  # [cluster]: no judge host could judge it (dead-lettered, too large)


@dataclass(frozen=True)
class Problem:
    """One reason a part of the judgement is missing, with a human-readable detail."""

    reason: Reason
    detail: str = ""
    source: str = ""

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.reason.value}" + (f" ({self.detail})" if self.detail else "")

    @classmethod
    def from_exception(cls, exc: BaseException, source: str) -> Problem:
        """A plugin's failure as a Problem: an exception with a `reason` attribute naming a Reason
        ("timeout", "too_large", ...) keeps it and its message; anything else is a detector_error."""
        try:
            reason = Reason(getattr(exc, "reason", None))
        except ValueError:
            return cls(Reason.DETECTOR_ERROR, f"{type(exc).__name__}: {exc}", source)
        return cls(reason, str(getattr(exc, "detail", None) or exc), source)


@dataclass(frozen=True)
class Verdict:
    """`findings` are those kept within `[limits]` (every type found is among them, at its highest
    severity); `counts` says, per type, how many were found and how many of them are kept."""

    kind: VerdictKind
    findings: tuple[Finding, ...] = ()
    problems: tuple[Problem, ...] = ()
    counts: tuple[TypeCount, ...] = ()

    @property
    def reason(self) -> str | None:
        """The unscanned reasons joined, or None when every part was judged."""
        return "; ".join(str(p) for p in self.problems) or None

    @property
    def finding_count(self) -> int:
        """How many findings were made, kept or not."""
        return sum(c.count for c in self.counts) if self.counts else len(self.findings)

    def counts_dicts(self) -> list[dict]:
        """`counts` for a record: [{"type", "count", "kept", "severity"}, ...]."""
        return [c.to_dict() for c in self.counts]


@dataclass
class VerdictBuilder:
    """Accumulates detector outcomes. Adding is the only operation, so no outcome can undo another.
    Findings are counted, and kept within `limits` (`dropwarden.findings.FindingTally`)."""

    limits: FindingLimits = field(default_factory=FindingLimits)
    problems: list[Problem] = field(default_factory=list)
    tally: FindingTally = field(init=False)

    def __post_init__(self) -> None:
        self.tally = FindingTally(self.limits)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.tally.kept

    def add_findings(self, findings: Iterable[Finding], omitted: Omitted | None = None) -> None:
        """Add findings, and the count of those a detector made but did not build (`omitted`, or the
        `omitted` of a `dropwarden.findings.Findings`)."""
        self.tally.add_all(findings)
        for (finding_type, severity), count in (omitted or {}).items():
            self.tally.omit(finding_type, severity, count)

    def add_problem(self, problem: Problem) -> None:
        self.problems.append(problem)

    def build(self) -> Verdict:
        if self.tally.total:
            kind = VerdictKind.FINDING
        elif self.problems:
            kind = VerdictKind.UNSCANNED
        else:
            kind = VerdictKind.CLEAN
        return Verdict(kind, self.tally.kept, tuple(self.problems), self.tally.counts())


def unscanned(reason: Reason, detail: str = "", source: str = "") -> Verdict:
    return Verdict(VerdictKind.UNSCANNED, (), (Problem(reason, detail, source),))
