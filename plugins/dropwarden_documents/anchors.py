"""Anchors (start, end, label) of a view, packed: two integer arrays and one string cross the process
boundary instead of a tuple per cell (a 100,000-row sheet's anchors were the worker's largest object)."""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

Anchor = tuple[int, int, str]


class PackedAnchors(Sequence[Anchor]):
    """A read-only sequence of (start, end, label), labels held as one string (none holds a line break:
    they are names the walk makes, such as "cell B2" or "page 3"), each after a common `prefix`
    ("cell "). `blocks`: (index of its first label, where it starts in `joined`) of each block of
    labels, so that one label is found without splitting them all (500,000 of them took 35 ms for the
    one cell a finding was in)."""

    __slots__ = ("_labels", "blocks", "ends", "joined", "prefix", "starts")

    def __init__(
        self,
        starts: array,
        ends: array,
        joined: str,
        prefix: str = "",
        blocks: tuple[array, array] | None = None,
    ) -> None:
        self.starts = starts
        self.ends = ends
        self.joined = joined
        self.prefix = prefix
        self.blocks = blocks
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
            found = self.joined.split("\n") if self.starts else []
            self._labels = [self.prefix + label for label in found] if self.prefix else found
        return self._labels

    def label(self, index: int) -> str:
        """The label of anchor `index` (>= 0), splitting only its block where there are blocks."""
        if self.blocks is None or self._labels is not None:
            return self.labels()[index]
        firsts, offsets = self.blocks
        block = bisect_right(firsts, index) - 1
        end = offsets[block + 1] - 1 if block + 1 < len(offsets) else len(self.joined)
        return self.prefix + self.joined[offsets[block] : end].split("\n")[index - firsts[block]]

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, index: int) -> Anchor: ...
    @overload
    def __getitem__(self, index: slice) -> list[Anchor]: ...
    def __getitem__(self, index: int | slice) -> Anchor | list[Anchor]:
        if isinstance(index, slice):
            return list(zip(self.starts[index], self.ends[index], self.labels()[index], strict=True))
        if index < 0:
            index += len(self.starts)
            if index < 0:
                raise IndexError("anchor index out of range")
        return self.starts[index], self.ends[index], self.label(index)

    def __iter__(self) -> Iterator[Anchor]:
        return zip(self.starts, self.ends, self.labels(), strict=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __hash__(self) -> int:
        return hash((bytes(self.starts), bytes(self.ends), self.prefix, self.joined))

    def __reduce__(self) -> tuple[Any, ...]:
        return PackedAnchors, (self.starts, self.ends, self.joined, self.prefix, self.blocks)

    def __repr__(self) -> str:
        return f"PackedAnchors({len(self)} anchors)"
