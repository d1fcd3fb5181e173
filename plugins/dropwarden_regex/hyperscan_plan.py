"""Per rule, for the hyperscan engine: its expressions, windows, context-word literals, confirmation."""

from __future__ import annotations

import bisect
import functools
import itertools
import operator
import re
import sys
from typing import Any

from dropwarden_regex.rewrite import prefilter_expression
from dropwarden_regex.rules import Rule
from dropwarden_regex.spans import CharCursor, Span

MARGIN = 64


class RulePlan:
    """How the hyperscan engine confirms one rule: its regex and window sizes (bytes)."""

    __slots__ = ("back", "context", "context_odd", "context_words", "forward", "regex", "unicode", "window")

    def __init__(self, rule: Rule, max_match_length: int) -> None:
        cap = rule.max_length if rule.max_length is not None else max_match_length
        longest = min(rule.width[1], cap)
        self.regex = rule.regex
        self.unicode = rule.unicode
        self.context = rule.context
        self.window = rule.context_window
        # hyperscan expressions (ASCII case ignored) for the context words, and for the other characters
        # whose case folding holds a character of one: near one of those, a region without a word in
        # its bytes is checked on the case-folded text (`near_context`)
        words = [word.encode("utf-8", "surrogatepass").lower() for word in rule.context]
        odd = [c.encode("utf-8", "surrogatepass") for c in _fold_preimages("".join(rule.context))]
        self.context_words = _literals(words) if words else None
        self.context_odd = _literals(odd) if odd else None
        # how far before a hit a match may start: its length at most, less where the pack says so
        self.back = min(longest, rule.hit_back) if rule.hit_back else longest
        self.forward = longest + rule.lookahead + MARGIN


class Hits(dict[int, list[int]]):
    """Expression id -> the end offsets a scan reported for it. An expression with none reads as empty
    and is not stored: most views of a small file have no hit at all, and a list made for each of a
    database's ~100 expressions was most of the cost of scanning such a view."""

    __slots__ = ()

    def __missing__(self, expression: int) -> tuple[()]:
        return ()  # immutable: a hit must be added with `get`/`setdefault`, never appended to this


def stop_at_first_hit(_expression: int, _start: int, _end: int, _flags: int, _context: Any) -> bool:
    """hyperscan's match handler for a caller that only asks whether there is any hit: stop the scan."""
    return True


def record_hit(expression: int, _start: int, end: int, _flags: int, hits: Hits) -> None:
    """hyperscan's match handler: one hit of `expression` ending at `end`, added to `hits`."""
    ends = hits.get(expression)
    if ends is None:
        hits[expression] = [end]
    else:
        ends.append(end)


class CompiledDatabase:
    """One compiled hyperscan database: which expressions stand for which rules, and how to window them."""

    def __init__(
        self,
        db: Any,
        ids: dict[tuple[bytes, int], int],
        rule_expressions: dict[int, tuple[int, ...]],
        plans: list[RulePlan],
    ) -> None:
        self.db = db
        self.ids = ids  # (expression, flags) -> hyperscan id
        self.expression_count = len(ids)
        self.rule_expressions = rule_expressions
        # Rules with the same expressions (a shared trigger) share their regions, sized for the
        # largest of them: a wider window than a rule needs keeps the result exact (HyperscanEngine).
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, expression_ids in rule_expressions.items():
            groups.setdefault(expression_ids, []).append(index)
        self.groups = [
            (ids, members, max(plans[i].back for i in members), max(plans[i].forward for i in members))
            for ids, members in groups.items()
        ]


def confirm_regions(
    finditer: Any,
    index: int,
    regions: list[tuple[int, int, int]],
    data: bytes,
    low: int,
    high: int,
    resume: int,
    out: list[Span],
) -> int:
    """Confirm one rule's regions: append its matches starting in [low, high) to `out`; returns where
    its whole-text scan has got to (the end of its last match)."""
    for ws, max_end, we in regions:
        if ws < resume:
            ws = resume
            if ws > max_end:
                continue
        for m in finditer(data, ws, we):
            start, end = m.span()
            if start > max_end or start >= high:
                break  # past this region; or the next segment's
            if start >= low:
                out.append((index, start, end))
            resume = end
            if end > max_end:  # any further match starts past max_end: done, unscanned
                break
    return resume


def hyperscan_expressions(rule: Rule, hs: Any, use_trigger: bool) -> list[tuple[bytes, int]]:
    """The hyperscan expressions (with flags) whose hits stand for `rule`'s match ends: its trigger
    (fast database), else its prefilter expressions, else its own pattern."""
    flags = hs.HS_FLAG_PREFILTER | (hs.HS_FLAG_CASELESS if rule.ignore_case else 0)
    if use_trigger and rule.trigger:
        sources: tuple[str, ...] = (rule.trigger,)
    elif rule.prefilter:
        sources = rule.prefilter
    else:
        verbose = bool(rule.regex.flags & re.VERBOSE)
        return [(prefilter_expression(rule.pattern, verbose).encode("utf-8"), flags)]
    return [
        (prefilter_expression(source, bool(re.compile(source).flags & re.VERBOSE)).encode("utf-8"), flags)
        for source in sources
    ]


def near_context(
    regions: list[tuple[int, int, int]],
    plan: RulePlan,
    data: bytes,
    text: str,
    database: CompiledDatabase,
    hits: Hits,
    base: int = 0,
    cursor: CharCursor | None = None,
) -> list[tuple[int, int, int]]:
    """The regions whose surroundings hold a context word: a match in a region lies inside it, so its
    context window lies inside the region widened by the window (casefold maps character by
    character, so a word in a match's window is a word in that slice). Cheap where candidates are
    many (a CSV of 12-digit numbers without the word My Number is skipped in one pass).

    The scan has found the words in the bytes (ASCII case ignored): a word in the case-folded text is
    one of those, within 4 bytes per character of the region, unless a character that case-folds into
    a word's characters (`RulePlan.context_odd`, such as "ﬁ") is near; only then is the text checked."""
    words = sorted(base + hit for hit in hits[database.ids[plan.context_words]]) if plan.context_words else []
    odd = sorted(base + hit for hit in hits[database.ids[plan.context_odd]]) if plan.context_odd else []
    reach = 4 * plan.window + 4
    cursor = cursor or CharCursor(data, text)
    kept = []
    for region in regions:
        ws, _, we = region
        low, high = ws - reach, we + reach
        i = bisect.bisect_left(words, low)
        if i < len(words) and words[i] <= high:
            kept.append(region)
            continue
        i = bisect.bisect_left(odd, low)
        if i == len(odd) or odd[i] > high:
            continue
        start, end = cursor.at(ws), cursor.at(we, round_up=True)
        around = text[max(0, start - plan.window) : end + plan.window].casefold()
        if any(word in around for word in plan.context):
            kept.append(region)
    return kept


def _literals(literals: list[bytes]) -> tuple[bytes, int]:
    """A hyperscan expression (with flags) for any of `literals`, ASCII letters in either case."""
    import hyperscan

    escaped = (b"".join(b"\\x%02x" % byte for byte in literal) for literal in sorted(set(literals)))
    return b"|".join(escaped), hyperscan.HS_FLAG_CASELESS


@functools.cache
def _fold_preimages(chars: str) -> tuple[str, ...]:
    """The non-ASCII characters, other than `chars` themselves, whose case folding holds one of
    `chars` (for "individual": "ﬁ", "İ", ...); with ASCII upper case, the only ways a case-folded
    text can hold a word made of `chars` that its bytes, ASCII case ignored, do not."""
    wanted = set(chars)
    found = []
    for low in range(0x80, sys.maxunicode + 1, 256):  # most blocks fold to themselves: skip them whole
        block = "".join(map(chr, range(low, min(low + 256, sys.maxunicode + 1))))
        if block.casefold() != block:
            found.extend(c for c in block if c.casefold() != c and not wanted.isdisjoint(c.casefold()))
    found.extend(c for c in chars if c.isascii() and c.casefold() != c)  # a word never matches then anyway
    return tuple(sorted(set(found) - wanted))


def merge_regions(ends: list[int], back: int, forward: int, size: int) -> list[tuple[int, int, int]]:
    """Merge one rule's hit end offsets into confirmation windows (ws, max_end, we), disjoint."""
    ends.sort()
    regions = []
    first = last = ends[0]
    for end in ends:
        if end - back > last + forward:
            regions.append((max(0, first - back), last, min(size, last + forward)))
            first = end
        last = end
    regions.append((max(0, first - back), last, min(size, last + forward)))
    return regions


def uncovered_regions(
    regions: list[tuple[int, int, int]], ends: list[int], covered: list[tuple[int, int]], limit: int
) -> list[tuple[int, int, int]]:
    """The regions (of `merge_regions` over the sorted hit offsets `ends`) that have a hit not strictly
    inside a `covered` span (start < hit < end), or whose window reaches past `limit`.

    Every match of a region holds one of its hits (start <= hit <= end, `HyperscanEngine`), so a match
    of a region left out overlaps a covered span."""
    covered.sort()
    starts = list(map(operator.itemgetter(0), covered))
    reach = list(itertools.accumulate(map(operator.itemgetter(1), covered), max))  # furthest end up to each
    kept = []
    for region in regions:
        ws, max_end, we = region
        if we > limit:
            kept.append(region)
            continue
        for hit in ends[bisect.bisect_left(ends, ws) : bisect.bisect_right(ends, max_end)]:
            before = bisect.bisect_left(starts, hit)  # the covered spans starting before the hit
            if not before or reach[before - 1] <= hit:
                kept.append(region)
                break
    return kept
