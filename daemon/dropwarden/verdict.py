"""Verdicts and their monotonic combination: findings are never cleared, errors are never "clean"."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from dropwarden.findings import Finding


class VerdictKind(StrEnum):
    CLEAN = "clean"
    FINDING = "finding"
    UNSCANNED = "unscanned"


class Reason(StrEnum):
    """Why (part of) a file could not be judged."""

    UNREADABLE = "unreadable"
    TOO_LARGE = "too_large"
    DECODE_ERROR = "decode_error"
    DETECTOR_ERROR = "detector_error"
    TIMEOUT = "timeout"
    NOT_REGULAR = "not_regular"
    SYMLINK = "symlink"
    HARD_LINKED = "hard_linked"
    CHANGED = "changed_while_reading"
    UNSUPPORTED = "unsupported_type"


@dataclass(frozen=True)
class Problem:
    """One reason a part of the judgement is missing, with a human-readable detail."""

    reason: Reason
    detail: str = ""
    source: str = ""

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.reason.value}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    findings: tuple[Finding, ...] = ()
    problems: tuple[Problem, ...] = ()

    @property
    def reason(self) -> str | None:
        """The unscanned reasons joined, or None when every part was judged."""
        return "; ".join(str(p) for p in self.problems) or None


@dataclass
class VerdictBuilder:
    """Accumulates detector outcomes. Adding is the only operation, so no outcome can undo another."""

    findings: list[Finding] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def add_findings(self, findings: list[Finding] | tuple[Finding, ...]) -> None:
        self.findings.extend(findings)

    def add_problem(self, problem: Problem) -> None:
        self.problems.append(problem)

    def build(self) -> Verdict:
        if self.findings:
            kind = VerdictKind.FINDING
        elif self.problems:
            kind = VerdictKind.UNSCANNED
        else:
            kind = VerdictKind.CLEAN
        return Verdict(kind, tuple(self.findings), tuple(self.problems))


def unscanned(reason: Reason, detail: str = "", source: str = "") -> Verdict:
    return Verdict(VerdictKind.UNSCANNED, (), (Problem(reason, detail, source),))
