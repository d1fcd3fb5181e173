"""Anchors (start, end, label) of a view, packed: two integer arrays and one string cross the process
boundary instead of a tuple per cell (a 100,000-row sheet's anchors were the worker's largest object)."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

Anchor = tuple[int, int, str]


class PackedAnchors(Sequence[Anchor]):
    """A read-only sequence of (start, end, label), labels held as one string (none holds a line break:
    they are names the walk makes, such as "cell B2" or "page 3")."""

    __slots__ = ("_labels", "ends", "joined", "starts")

    def __init__(self, starts: array, ends: array, joined: str) -> None:
        self.starts = starts
        self.ends = ends
        self.joined = joined
        self._labels: list[str] | None = None

    @classmethod
    def pack(cls, anchors: Iterable[Anchor]) -> PackedAnchors:
        starts, ends, labels = array("q"), array("q"), []
        for start, end, label in anchors:
            starts.append(start)
            ends.append(end)
            labels.append(label.replace("\n", " "))
        return cls(starts, ends, "\n".join(labels))

    def labels(self) -> list[str]:
        if self._labels is None:
            self._labels = self.joined.split("\n") if self.starts else []
        return self._labels

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, index: int) -> Anchor: ...
    @overload
    def __getitem__(self, index: slice) -> list[Anchor]: ...
    def __getitem__(self, index: int | slice) -> Anchor | list[Anchor]:
        if isinstance(index, slice):
            return list(zip(self.starts[index], self.ends[index], self.labels()[index], strict=True))
        return self.starts[index], self.ends[index], self.labels()[index]

    def __iter__(self) -> Iterator[Anchor]:
        return zip(self.starts, self.ends, self.labels(), strict=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __hash__(self) -> int:
        return hash((bytes(self.starts), bytes(self.ends), self.joined))

    def __reduce__(self) -> tuple[Any, ...]:
        return PackedAnchors, (self.starts, self.ends, self.joined)

    def __repr__(self) -> str:
        return f"PackedAnchors({len(self)} anchors)"
