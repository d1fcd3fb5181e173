"""What a detector reports: severities, locations and findings (never the raw value)."""

from __future__ import annotations

from collections.abc import Iterable
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

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


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
