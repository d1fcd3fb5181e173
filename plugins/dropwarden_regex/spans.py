"""Raw matches to reported spans, a segment at a time: character offsets, validators, context words."""

from __future__ import annotations

import bisect
import re
from collections.abc import Container, Iterator, Sequence

from dropwarden_regex.rules import Rule
from dropwarden_regex.textpos import utf8_char_count
from dropwarden_regex.validators import Validator

Span = tuple[int, int, int]  # (rule index, char start, char end)


SEGMENT = 1 << 20  # bytes of a view matched at a time: what one batch of matches covers


NOTHING: frozenset[int] = frozenset()


class LazyRule:
    """One rule's whole-view `finditer`, taken a segment at a time (so exactly its matches)."""

    __slots__ = ("_matches", "_next", "index", "unicode")

    def __init__(self, index: int, regex: re.Pattern, unicode: bool, data: bytes, text: str) -> None:
        self.index = index
        self.unicode = unicode
        self._matches = regex.finditer(text if unicode else data)
        self._next: tuple[int, int] | None = None

    def take(self, below: int) -> list[Span]:
        """The matches starting before `below` (characters for a unicode rule, else bytes) not taken yet."""
        out: list[Span] = []
        index = self.index
        pending = self._next
        while True:
            if pending is None:
                match = next(self._matches, None)
                if match is None:
                    break
                pending = match.span()
            if pending[0] >= below:
                break
            out.append((index, *pending))
            pending = None
        self._next = pending
        return out


def lazy_batches(
    lazy: list[LazyRule],
    data: bytes,
    text: str,
    segment: int,
    done: Container[int],
    contexts: dict[int, tuple[tuple[str, ...], int]],
    validators: dict[int, Validator],
) -> Iterator[list[Span]]:
    """Batches of whole-view `finditer` matches, one segment of bytes at a time (by match start)."""
    size = len(data)
    chars = CharCursor(data, text)
    cursor = CharCursor(data, text)
    for low in range(0, max(size, 1), segment):
        high = min(size, low + segment)
        char_high = chars.at(high) if high < size else len(text)
        byte_spans: list[Span] = []
        char_spans: list[Span] = []
        for rule in lazy:
            if rule.index in done:
                continue
            if rule.unicode:
                char_spans.extend(rule.take(char_high))
            else:
                byte_spans.extend(rule.take(high if high < size else size + 1))
        yield finish(data, text, byte_spans, char_spans, contexts, validators, cursor)


def contexts_of(rules: Sequence[Rule]) -> dict[int, tuple[tuple[str, ...], int]]:
    """Rule index -> (context words, window) for the rules that need context words."""
    return {index: (rule.context, rule.context_window) for index, rule in enumerate(rules) if rule.context}


def validators_of(rules: Sequence[Rule]) -> dict[int, Validator]:
    """Rule index -> validator for the rules that have one."""
    return {index: rule.validator for index, rule in enumerate(rules) if rule.validator is not None}


def has_context(text: str, start: int, end: int, words: tuple[str, ...], window: int) -> bool:
    """Whether a (case-folded) context word occurs within `window` characters before or after."""
    before = text[max(0, start - window) : start].casefold()
    after = text[end : end + window].casefold()
    return any(word in before or word in after for word in words)


class CharCursor:
    """Byte offset -> character offset in `text` (UTF-8 `data`), incremental in either direction.

    It keeps a mark every `MARK_BYTES` or more of the way it has gone, so going back (a yielding
    rule's matches are converted after the others') counts from the nearest mark, not all the way."""

    __slots__ = ("_b", "_c", "_data", "_identity", "_marks_b", "_marks_c", "_size")

    MARK_BYTES = 4096

    def __init__(self, data: bytes, text: str) -> None:
        self._data = data
        self._size = len(data)
        self._identity = len(data) == len(text)  # pure ASCII: offsets agree
        self._b = self._c = 0
        self._marks_b, self._marks_c = [0], [0]  # increasing

    def at(self, offset: int, round_up: bool = False) -> int:
        if self._identity:
            return offset
        data, size = self._data, self._size
        if round_up:
            while offset < size and data[offset] & 0xC0 == 0x80:
                offset += 1
        else:
            while 0 < offset < size and data[offset] & 0xC0 == 0x80:
                offset -= 1
        b, c = self._b, self._c
        marks_b = self._marks_b
        if abs(offset - b) > self.MARK_BYTES:  # a mark may be nearer than where the cursor is
            i = bisect.bisect_right(marks_b, offset) - 1
            if offset - marks_b[i] < abs(offset - b):
                b, c = marks_b[i], self._marks_c[i]
        if offset >= b:
            c += utf8_char_count(data, b, offset)
        else:
            c -= utf8_char_count(data, offset, b)
        if offset - marks_b[-1] >= self.MARK_BYTES:
            marks_b.append(offset)
            self._marks_c.append(c)
        self._b, self._c = offset, c
        return c


def finish(
    data: bytes,
    text: str,
    byte_spans: list[Span],
    char_spans: list[Span],
    contexts: dict[int, tuple[tuple[str, ...], int]] | None = None,
    validators: dict[int, Validator] | None = None,
    cursor: CharCursor | None = None,
    kept_bytes: list[tuple[int, int]] | None = None,
) -> list[Span]:
    """Keep the matches that pass their rule's validator, convert byte spans to character spans
    (rounding out to whole characters), keep the matches of context rules that have a context word
    nearby (`has_context`), merge, sort. With `kept_bytes`, the byte spans kept are appended to it.

    Most matches are ASCII and most candidates fail their validator (card-shaped numbers in tables):
    an ASCII match is validated on its own bytes, before the costlier conversion of its offsets."""
    if validators:
        char_spans = [
            span
            for span in char_spans
            if (check := validators.get(span[0])) is None or check(text[span[1] : span[2]])
        ]
    else:
        validators = {}
    if contexts:
        char_spans = [
            span
            for span in char_spans
            if span[0] not in contexts or has_context(text, span[1], span[2], *contexts[span[0]])
        ]
    else:
        contexts = {}
    if byte_spans:
        identity = len(data) == len(text)  # pure ASCII: offsets agree
        if not identity:
            byte_spans.sort(key=lambda span: span[1])
        at = (cursor or CharCursor(data, text)).at
        for index, start, end in byte_spans:
            check = validators.get(index)
            if identity:
                if check is not None and not check(data[start:end].decode("ascii")):
                    continue
                char_start, char_end = start, end
            else:
                chunk = data[start:end]
                if chunk.isascii():  # whole ASCII characters: the character span is as long
                    if check is not None and not check(chunk.decode("ascii")):
                        continue
                    char_start = at(start)
                    char_end = char_start + end - start
                else:
                    char_start, char_end = at(start), at(end, round_up=True)
                    if check is not None and not check(text[char_start:char_end]):
                        continue
            if index in contexts and not has_context(text, char_start, char_end, *contexts[index]):
                continue
            char_spans.append((index, char_start, char_end))
            if kept_bytes is not None:
                kept_bytes.append((start, end))
    char_spans.sort(key=lambda span: (span[1], span[2], span[0]))
    return char_spans
