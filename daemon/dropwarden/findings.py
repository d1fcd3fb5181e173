"""What a detector reports: severities, locations and findings (never the raw value)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any


class Severity(IntEnum):
    """Ordered severities; policy compares them (`finding.severity >= watch.min_severity`)."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        if isinstance(value, Severity):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {value!r} (expected one of: {names})") from None

    def __str__(self) -> str:
        return self.name.lower()


BBox = tuple[int, int, int, int]  # (left, top, right, bottom) in image pixels


def bbox_union(boxes: Iterable[BBox]) -> BBox:
    """The smallest box holding all of `boxes` (at least one)."""
    lefts, tops, rights, bottoms = zip(*boxes, strict=True)
    return (min(lefts), min(tops), max(rights), max(bottoms))


@dataclass(frozen=True, slots=True)
class Location:
    """Where in which view a finding sits: a text span (line, char offset) or an image region (bbox)."""

    view: str
    line: int | None = None
    column: int | None = None
    offset: int | None = None
    length: int | None = None
    bbox: BBox | None = None
    # Inside a container: the path to the view, outer to inner ("inner.zip", "report.docx",
    # "word/document.xml"), then where in it ("page 3", "sheet Hidden", "cell B2", "slide 2", ...).
    within: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON's own types: what a record holds is what reading it back gives (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True, slots=True)
class Finding:
    """One detection. `excerpt` is redacted and `fingerprint` is keyed: neither reveals the value."""

    type: str
    rule: str
    detector: str
    detector_version: str
    severity: Severity
    confidence: float
    location: Location
    excerpt: str
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "rule": self.rule,
            "detector": self.detector,
            "detector_version": self.detector_version,
            "severity": str(self.severity),
            "confidence": round(self.confidence, 3),
            "location": self.location.to_dict(),
            "excerpt": self.excerpt,
            "fingerprint": self.fingerprint,
        }
        if self.extra:
            out["extra"] = self.extra
        return out


@dataclass(frozen=True, slots=True)
class FindingLimits:
    """How many findings one file (and one detector call) keeps: `per_type` of each type, `total` in
    all; what is not kept is still counted (`FindingTally`), up to `counted` of a type in one view,
    past which a detector may stop looking for that type (the count is then a lower bound). The
    defaults are `[limits]`'s."""

    per_type: int = 50
    total: int = 200
    counted: int = 100_000


UNLIMITED = FindingLimits(sys.maxsize, sys.maxsize, sys.maxsize)


@dataclass(frozen=True, slots=True)
class TypeCount:
    """How many findings of one type were made (`exact` false: at least that many; a detector stopped
    counting), how many of them are kept, and the highest severity."""

    type: str
    count: int
    kept: int
    severity: Severity
    exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "count": self.count,
            "kept": self.kept,
            "severity": str(self.severity),
            "exact": self.exact,
        }


Omitted = Mapping[tuple[str, Severity], int]  # (type, severity) -> findings counted but not built


class Findings(list[Finding]):
    """What a detector returns when it stops building findings at `DetectContext.limits`: the findings it
    built, `omitted`, how many more of each (type, severity) it found, and `inexact`, the types it
    stopped counting (past `limits.counted`). A plain list means it built every finding it made."""

    def __init__(
        self, findings: Iterable[Finding] = (), omitted: Omitted | None = None, inexact: Iterable[str] = ()
    ) -> None:
        super().__init__(findings)
        self.omitted: dict[tuple[str, Severity], int] = {k: n for k, n in (omitted or {}).items() if n}
        self.inexact: frozenset[str] = frozenset(inexact)

    @property
    def total(self) -> int:
        """How many findings were made: those here and those omitted."""
        return len(self) + sum(self.omitted.values())


class FindingTally:
    """Counts every finding and keeps a bounded number: for each type the first `per_type`, at most
    `total` in all; but the first finding of each type, and any finding more severe than all kept of
    its type, are always kept (at most one per severity), so a policy comparing severities sees every
    type found at its highest severity.

    A detector asks `wants(type, severity)` before building a finding, then `add`s it, or `omit`s it
    when not wanted: past the caps, nothing but a count is made."""

    __slots__ = ("_counts", "_kept", "_kept_by_type", "_top", "inexact", "limits")

    def __init__(self, limits: FindingLimits | None = None) -> None:
        self.limits = limits or FindingLimits()
        self._kept: list[Finding] = []
        self._kept_by_type: dict[str, int] = {}
        self._top: dict[str, Severity] = {}  # highest severity kept, per type
        self._counts: dict[str, list[Any]] = {}  # type -> [count, highest severity seen]
        self.inexact: set[str] = set()  # types whose count is a lower bound

    def wants(self, finding_type: str, severity: Severity) -> bool:
        """Whether a finding of this type and severity would be kept."""
        kept = self._kept_by_type.get(finding_type, 0)
        if not kept or severity > self._top[finding_type]:
            return True
        return kept < self.limits.per_type and len(self._kept) < self.limits.total

    def add(self, finding: Finding) -> bool:
        """Count `finding`, and keep it if wanted; returns whether it was kept."""
        self._count(finding.type, finding.severity, 1)
        if not self.wants(finding.type, finding.severity):
            return False
        self._kept.append(finding)
        self._kept_by_type[finding.type] = self._kept_by_type.get(finding.type, 0) + 1
        top = self._top.get(finding.type)
        if top is None or finding.severity > top:
            self._top[finding.type] = finding.severity
        return True

    def omit(self, finding_type: str, severity: Severity, count: int = 1) -> None:
        """Count findings that were not built (the caller asked `wants` first)."""
        self._count(finding_type, severity, count)

    def add_all(self, findings: Iterable[Finding]) -> None:
        """Add findings a detector returned, with what it counted but did not build (`Findings.omitted`)
        and the types it stopped counting (`Findings.inexact`)."""
        for finding in findings:
            self.add(finding)
        for (finding_type, severity), count in getattr(findings, "omitted", {}).items():
            self.omit(finding_type, Severity(severity), count)
        self.inexact.update(getattr(findings, "inexact", ()))

    def saturated(self, finding_type: str) -> bool:
        """Whether `limits.counted` findings of this type have been counted: enough to stop looking."""
        entry = self._counts.get(finding_type)
        return entry is not None and entry[0] >= self.limits.counted

    def _count(self, finding_type: str, severity: Severity, count: int) -> None:
        entry = self._counts.get(finding_type)
        if entry is None:
            self._counts[finding_type] = [count, severity]
        else:
            entry[0] += count
            if severity > entry[1]:
                entry[1] = severity

    @property
    def total(self) -> int:
        """How many findings were counted, kept or not."""
        return sum(entry[0] for entry in self._counts.values())

    @property
    def kept(self) -> tuple[Finding, ...]:
        return tuple(self._kept)

    def omitted(self) -> dict[tuple[str, Severity], int]:
        """(type, severity) -> findings counted but not kept (for a `Findings` result)."""
        out: dict[tuple[str, Severity], int] = {}
        for finding_type, (count, severity) in self._counts.items():
            rest = count - self._kept_by_type.get(finding_type, 0)
            if rest:
                # only the highest severity is known per type for what was not kept; what was kept at
                # that severity already shows it, so counting the rest there loses nothing a policy uses
                out[(finding_type, severity)] = rest
        return out

    def findings(self) -> Findings:
        """The kept findings with the count of the others: what a capped detector returns."""
        return Findings(self._kept, self.omitted(), self.inexact)

    def counts(self) -> tuple[TypeCount, ...]:
        """One entry per type found, by type name."""
        return tuple(
            TypeCount(
                finding_type,
                count,
                self._kept_by_type.get(finding_type, 0),
                severity,
                finding_type not in self.inexact,
            )
            for finding_type, (count, severity) in sorted(self._counts.items())
        )
