"""Multi-pattern matching: one hyperscan prefilter pass over the UTF-8 bytes, confirmed by Python `re`."""

from __future__ import annotations

import bisect
import functools
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Container, Iterator, Sequence
from typing import Any, Protocol

from dropwarden.config import SettingError
from dropwarden_regex.rules import Rule
from dropwarden_regex.validators import Validator

Span = tuple[int, int, int]  # (rule index, char start, char end)

MARGIN = 64
_RELAX_ABOVE = 32  # bounded repeats {m,n} with n above this are widened to {m,} for hyperscan only
_RELAX_LOW = 255  # ... and a lower bound above this is lowered to it
_CACHE_SIZE = 16
SEGMENT = 1 << 20  # bytes of a view matched at a time: what one batch of matches covers
_NOTHING: frozenset[int] = frozenset()


class MatchEngine(Protocol):
    """Both engines return every rule's matches as `(rule index, char start, char end)`: exactly what
    `rule.regex.finditer` over the whole view yields (leftmost, non-overlapping), sorted; for a rule
    with a validator, only the matches it accepts; for a rule with context words, only the matches
    with one nearby (`has_context`)."""

    name: str
    # Whether `text` must be a str (rules matched on decoded text); else anything that measures, slices,
    # counts and finds as a str does (`dropwarden.views.AsciiText`).
    needs_text: bool

    def scan(self, data: bytes, text: str) -> list[Span]:
        """All matches of all rules in `text` (whose UTF-8 encoding is `data`), sorted."""
        ...

    def scan_batches(self, data: bytes, text: str, done: Container[int] = _NOTHING) -> Iterator[list[Span]]:
        """The same matches, one `SEGMENT` of the view at a time: each batch sorted, every match of a
        batch starting after every match of the one before. Rules whose index is in `done` (which the
        caller may add to between batches) are not matched any further, so a caller that has seen
        enough of a rule stops paying for it, and memory stays bounded by a segment's matches."""
        ...


def hyperscan_available() -> bool:
    try:
        import hyperscan  # noqa: F401
    except ImportError:
        return False
    return True


_cache: OrderedDict[tuple[Any, ...], MatchEngine] = OrderedDict()
_cache_lock = threading.Lock()


def build_engine(rules: Sequence[Rule], kind: str = "auto", max_match_length: int = 512) -> MatchEngine:
    """The engine for `rules`: "hyperscan", "python", or "auto" (hyperscan when importable).

    Engines are cached by the rules' patterns, so building a detector again from the same settings
    (a config reload, a detector per chunk) does not recompile the hyperscan database.
    """
    if kind not in ("auto", "hyperscan", "python"):
        raise SettingError(
            ("rules", "engine"), f"unknown engine {kind!r} (expected auto, hyperscan or python)"
        )
    if kind == "auto":
        kind = "hyperscan" if hyperscan_available() else "python"
    elif kind == "hyperscan" and not hyperscan_available():
        raise SettingError(
            ("rules", "engine"), "'hyperscan' is configured but the hyperscan module is not importable"
        )
    key = (kind, max_match_length, tuple(rule.engine_key() for rule in rules))
    with _cache_lock:
        engine = _cache.get(key)
        if engine is not None:
            _cache.move_to_end(key)
            return engine
    engine = PythonEngine(rules) if kind == "python" else HyperscanEngine(rules, max_match_length)
    with _cache_lock:
        _cache[key] = engine
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return engine


class PythonEngine:
    """Every rule's `finditer` over the whole view: the reference semantics, and the fallback."""

    name = "python"

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = [(index, rule.regex, rule.unicode) for index, rule in enumerate(rules)]
        self._contexts = contexts_of(rules)
        self._validators = validators_of(rules)
        self.segment = SEGMENT
        self.needs_text = any(rule.unicode for rule in rules)

    def scan(self, data: bytes, text: str) -> list[Span]:
        return [span for batch in self.scan_batches(data, text) for span in batch]

    def scan_batches(self, data: bytes, text: str, done: Container[int] = _NOTHING) -> Iterator[list[Span]]:
        lazy = [_LazyRule(index, regex, unicode, data, text) for index, regex, unicode in self._rules]
        yield from _lazy_batches(lazy, data, text, self.segment, done, self._contexts, self._validators)


class _LazyRule:
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


def _lazy_batches(
    lazy: list[_LazyRule],
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


class _Plan:
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
        # its bytes is checked on the case-folded text (`_near_context`)
        words = [word.encode("utf-8", "surrogatepass").lower() for word in rule.context]
        odd = [c.encode("utf-8", "surrogatepass") for c in _fold_preimages("".join(rule.context))]
        self.context_words = _literals(words) if words else None
        self.context_odd = _literals(odd) if odd else None
        # how far before a hit a match may start: its length at most, less where the pack says so
        self.back = min(longest, rule.hit_back) if rule.hit_back else longest
        self.forward = longest + rule.lookahead + MARGIN


class _Database:
    """One compiled hyperscan database: which expressions stand for which rules, and how to window them."""

    def __init__(
        self,
        db: Any,
        ids: dict[tuple[bytes, int], int],
        rule_expressions: dict[int, tuple[int, ...]],
        plans: list[_Plan],
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


class HyperscanEngine:
    """One hyperscan scan for all rules, then per-rule confirmation by Python `re` in small windows.

    For every rule, expressions whose hits are a superset of the rule's match *end* offsets are
    compiled with `HS_FLAG_PREFILTER`: the rule's pattern itself (lookarounds dropped, large repeats
    widened: both only add matches), or the pack's cheaper `prefilter`/`trigger` expressions (see
    packs/pii.toml). No start-of-match tracking: it costs ~10x. The end offsets of one rule are merged
    into regions, and each region is confirmed by `regex.finditer(data, ws, we)` over a window:

        ws = min_end - L           L: the rule's longest match (capped): no match ending here starts earlier
        we = max_end + L + R + 64  R: how far its lookaheads read: every attempt starting <= max_end reads
                                   only bytes below `we`, so it behaves exactly as over the whole text

    and only matches starting at or before `max_end` are kept (so the scan stops at the first match
    ending past it: every later match starts later still). Regions whose windows would overlap are
    merged, so the scan at `ws` is never inside a match of the whole-text scan; `re` sees the bytes
    before `ws`, so lookbehinds and \\b are exact. The result equals the whole-text scan for every rule
    whose matches are at most L bytes long (all built-in rules; L defaults to `rules.max_match_length`,
    a pack rule may declare its own `max_length`).

    Two databases: the fast one uses each rule's `trigger` where it has one (a coarse expression shared
    by several rules, e.g. "a digit run"), the precise one each rule's own `prefilter`. The fast scan
    stops once a trigger has reported more than `trigger_budget` hits (logs, numeric tables), and the
    precise database scans the view instead, so confirmation stays proportional to real candidates.
    The contract is looser than "every match end": an offset inside every match (start <= hit <= end)
    is enough, since such a match still starts at or after `hit - L` and ends before `hit + L`.

    Rules hyperscan cannot compile even in prefilter mode, and rules with non-ASCII patterns (matched
    against the decoded text; hyperscan's UTF-8 mode is undefined on lone surrogates), fall back one by
    one to `finditer` over the whole text, as `PythonEngine` does for all rules.
    """

    name = "hyperscan"

    def __init__(self, rules: Sequence[Rule], max_match_length: int = 512) -> None:
        import hyperscan

        self._hs = hyperscan
        self._plans = [_Plan(rule, max_match_length) for rule in rules]
        self._contexts = contexts_of(rules)
        self._validators = validators_of(rules)
        self._local = threading.local()
        # (minimum, bytes per hit): a trigger overflows once it has reported more than `minimum` hits and
        # more than one per `bytes per hit` of the view scanned so far
        self.trigger_budget = (256, 512)
        # (minimum, bytes per hit): a segment whose precise scan reports more is dense (`_segment_hits`)
        self.dense_budget = (4096, 16)
        self.segment = SEGMENT
        self._groups: dict[tuple[int, tuple[int, ...]], Any] = {}
        self._groups_lock = threading.Lock()
        # How far a segment's scan reaches around it (see `scan_batches`): hits of matches starting in
        # the segment end at most `back` after it; windows and context words reach further.
        plans = self._plans
        self._reach_back = max((p.back for p in plans), default=0)
        self._reach_forward = max((p.forward for p in plans), default=0)
        self._reach_context = max((4 * p.window + 4 for p in plans if p.context), default=0)
        # Rules matched against decoded text (non-ASCII patterns) are not given to hyperscan: its UTF-8
        # mode is undefined on text holding lone surrogates. They, and any rule hyperscan rejects even
        # in prefilter mode, run as one whole-text `finditer` each.
        precise: dict[int, list[tuple[bytes, int]]] = {}
        fast: dict[int, list[tuple[bytes, int]]] = {}
        for index, rule in enumerate(rules):
            if rule.unicode:
                continue
            try:
                expressions = _expressions(rule, hyperscan, use_trigger=False)
                fast[index] = _expressions(rule, hyperscan, use_trigger=True)
            except UnsupportedSyntax:
                continue
            precise[index] = expressions
        self._precise = self._compile_all(precise)
        compiled = set(self._precise.rule_expressions) if self._precise else set()
        fast = {index: expressions for index, expressions in fast.items() if index in compiled}
        triggers = {expression for index in compiled if rules[index].trigger for expression in fast[index]}
        self._fast = (self._compile(fast) if triggers else None) or self._precise
        self._trigger_ids = frozenset(
            self._fast.ids[expression] for expression in triggers if self._fast is not self._precise
        )
        self.fallback = [index for index in range(len(rules)) if index not in compiled]
        self.needs_text = any(rules[index].unicode for index in self.fallback)
        # the precise database's ids of every context word expression (scanned first in a dense segment)
        precise_ids = self._precise.ids if self._precise else {}
        self._context_ids = tuple(
            sorted(
                {
                    precise_ids[literal]
                    for index in compiled
                    for literal in (self._plans[index].context_words, self._plans[index].context_odd)
                    if literal is not None and literal in precise_ids
                }
            )
        )

    def _compile_all(self, wanted: dict[int, list[tuple[bytes, int]]]) -> _Database | None:
        """A database of all `wanted` rules, or of those that compile (the others fall back)."""
        if not wanted:
            return None
        compiled = self._compile(wanted)
        if compiled is None:  # find the culprits, compile the rest
            wanted = {
                index: expressions
                for index, expressions in wanted.items()
                if self._compile({index: expressions})
            }
            compiled = self._compile(wanted) if wanted else None
        return compiled

    def _compile(self, wanted: dict[int, list[tuple[bytes, int]]]) -> _Database | None:
        """Equal expressions (a trigger shared by several rules) are compiled once; their hits go to
        every rule that names them. The context words of the wanted rules come along."""
        ids: dict[tuple[bytes, int], int] = {}
        rule_expressions = {
            index: tuple(ids.setdefault(expression, len(ids)) for expression in expressions)
            for index, expressions in wanted.items()
        }
        for index in wanted:
            plan = self._plans[index]
            for literal in (plan.context_words, plan.context_odd):
                if literal is not None:
                    ids.setdefault(literal, len(ids))
        hs = self._hs
        db = hs.Database(mode=hs.HS_MODE_BLOCK)
        try:
            db.compile(
                expressions=[expression for expression, _ in ids],
                ids=list(ids.values()),
                elements=len(ids),
                flags=[flags for _, flags in ids],
            )
        except hs.error:
            return None
        return _Database(db, ids, rule_expressions, self._plans)

    def _scratch(self, database: _Database | Any) -> Any:
        db = database.db if isinstance(database, _Database) else database
        scratches = getattr(self._local, "scratches", None)
        if scratches is None:
            scratches = self._local.scratches = {}
        scratch = scratches.get(id(db))
        if scratch is None:
            scratch = scratches[id(db)] = self._hs.Scratch(db)
        return scratch

    def _segment_hits(self, chunk: bytes, done: Container[int]) -> tuple[_Database, list[list[int]]] | None:
        """One segment's hits: `_hits`; but where the precise scan finds the chunk dense (more hits than
        `dense_budget` allows), each group of rules is scanned on its own database, leaving out the
        rules in `done` and the rules whose context words are not in the chunk. A file made of card
        numbers then costs, once the caller has counted enough of them, no more than its other rules."""
        try:
            return self._hits(chunk, dense=self.dense_budget)
        except _Dense:
            pass
        precise = self._precise
        assert precise is not None
        hits: list[list[int]] = [[] for _ in range(precise.expression_count)]
        words = self._group_db(precise, self._context_ids)
        if words is not None:
            words.scan(chunk, match_event_handler=_on_hit, context=hits, scratch=self._scratch(words))
        for expression_ids, members, _back, _forward in precise.groups:
            if not any(index not in done and self._context_in(index, precise, hits) for index in members):
                continue
            group = self._group_db(precise, expression_ids)
            if group is None:  # cannot happen (they compiled together); scan everything then
                return self._hits(chunk, precise=True)
            group.scan(chunk, match_event_handler=_on_hit, context=hits, scratch=self._scratch(group))
        return precise, hits

    def _context_in(self, index: int, database: _Database, hits: list[list[int]]) -> bool:
        """Whether rule `index` needs no context words, or the chunk scanned holds one of its words."""
        plan = self._plans[index]
        if not plan.context:
            return True
        literals = (plan.context_words, plan.context_odd)
        return any(hits[database.ids[literal]] for literal in literals if literal is not None)

    def _group_db(self, database: _Database, expression_ids: tuple[int, ...]) -> Any:
        """A database of some of `database`'s expressions, under the same ids (compiled once)."""
        if not expression_ids:
            return None
        key = (id(database), expression_ids)
        with self._groups_lock:
            if key in self._groups:
                return self._groups[key]
            wanted = set(expression_ids)
            chosen = [
                (expression, flags, i) for (expression, flags), i in database.ids.items() if i in wanted
            ]
            hs = self._hs
            db = hs.Database(mode=hs.HS_MODE_BLOCK)
            try:
                db.compile(
                    expressions=[expression for expression, _, _ in chosen],
                    ids=[i for _, _, i in chosen],
                    elements=len(chosen),
                    flags=[flags for _, flags, _ in chosen],
                )
            except hs.error:
                db = None
            self._groups[key] = db
            return db

    def _hits(
        self, data: bytes, precise: bool = False, dense: tuple[int, int] | None = None
    ) -> tuple[_Database, list[list[int]]] | None:
        """Run the fast database (the precise one if asked, or once a trigger overflows its budget).
        With `dense` (minimum, bytes per hit), a precise scan that reports more than `minimum` hits and
        more than one per `bytes per hit` so far stops, raising _Dense."""
        fast = self._fast
        if fast is None:
            return None
        if not precise and self._trigger_ids:
            hits: list[list[int]] = [[] for _ in range(fast.expression_count)]
            minimum, per_hit = self.trigger_budget
            dense_minimum, dense_per_hit = dense or (sys.maxsize, 1)
            triggers = self._trigger_ids
            total, dense_stop = 0, False

            def on_hit(expression: int, _start: int, end: int, _flags: int, _context: Any) -> bool | None:
                nonlocal total, dense_stop
                ends = hits[expression]
                ends.append(end)
                total += 1
                if total > dense_minimum and total > end // dense_per_hit:
                    dense_stop = True  # dense in expressions without a trigger (e-mail addresses, say)
                    return True
                # over budget so far: decided early, so a dense view is not scanned twice in full
                return (expression in triggers and len(ends) > minimum and len(ends) > end // per_hit) or None

            try:
                fast.db.scan(data, match_event_handler=on_hit, scratch=self._scratch(fast))
                return fast, hits
            except self._hs.ScanTerminated:
                if dense_stop:
                    raise _Dense from None
        database = self._precise if precise or self._trigger_ids else fast
        if database is None:
            return None
        hits = [[] for _ in range(database.expression_count)]
        if dense is None:
            database.db.scan(data, match_event_handler=_on_hit, context=hits, scratch=self._scratch(database))
            return database, hits
        minimum, per_hit = dense
        count = 0

        def on_dense_hit(expression: int, _start: int, end: int, _flags: int, _context: Any) -> bool | None:
            nonlocal count
            hits[expression].append(end)
            count += 1
            return (count > minimum and count > end // per_hit) or None

        try:
            database.db.scan(data, match_event_handler=on_dense_hit, scratch=self._scratch(database))
        except self._hs.ScanTerminated:
            raise _Dense from None
        return database, hits

    def scan_path(self, data: bytes) -> str:
        """Which database `scan` uses for `data`: "fast" or "precise" (for tests and diagnostics)."""
        found = self._hits(data)
        return "precise" if found is not None and found[0] is not self._fast else "fast"

    def prefilter_hits(self, data: bytes, precise: bool = False) -> dict[int, set[int]]:
        """Rule index -> the end offsets its expressions report in `data` (for tests)."""
        found = self._hits(data, precise) if data else None
        if found is None:
            return {}
        database, hits = found
        return {
            index: {end for e in ids for end in hits[e]} for index, ids in database.rule_expressions.items()
        }

    def scan(self, data: bytes, text: str) -> list[Span]:
        return [span for batch in self.scan_batches(data, text) for span in batch]

    def scan_batches(self, data: bytes, text: str, done: Container[int] = _NOTHING) -> Iterator[list[Span]]:
        """One batch per segment [low, high) of the view: the matches that start in it.

        The segment's hyperscan scan covers it and enough around it (`_reach_*`) for every hit of a
        match starting in it, for its windows, and for the context words near them; its regions come
        from the hits ending in [low, high + back). A rule's first window in a segment starts no
        earlier than the end of its last match in the segments before, so, as in one scan of the whole
        view, no window starts inside a match of the whole-text scan. Rules in `fallback` are their
        whole-view `finditer`, taken a segment at a time."""
        size = len(data)
        if not size:
            return
        plans = self._plans
        lazy = [
            _LazyRule(index, plans[index].regex, plans[index].unicode, data, text) for index in self.fallback
        ]
        fallback = _lazy_batches(lazy, data, text, self.segment, done, {}, {}) if lazy else None
        resume = [0] * len(plans)  # per rule: where its whole-text scan has got to
        cursor = CharCursor(data, text)
        context_cursor = CharCursor(data, text)
        around = self._reach_back + self._reach_context + MARGIN
        after = self._reach_back + self._reach_forward + self._reach_context + MARGIN
        for low in range(0, size, self.segment):
            high = min(size, low + self.segment)
            byte_spans: list[Span] = []
            base = max(0, low - around)
            found = self._segment_hits(data[base : min(size, high + after)], done)
            if found is not None:
                database, hits = found
                first, last = low - base, high + self._reach_back - base
                for expression_ids, members, back, forward in database.groups:
                    active = [index for index in members if index not in done]
                    if not active:
                        continue
                    ends = [base + end for x in expression_ids for end in hits[x] if first <= end < last]
                    if not ends:
                        continue
                    regions = _regions(ends, back, forward, size)
                    for index in active:
                        plan = plans[index]
                        rule_regions = (
                            _near_context(regions, plan, data, text, database, hits, base, context_cursor)
                            if plan.context
                            else regions
                        )
                        resume[index] = _confirm(
                            plan.regex.finditer,
                            index,
                            rule_regions,
                            data,
                            low,
                            high,
                            resume[index],
                            byte_spans,
                        )
            batch = finish(data, text, byte_spans, [], self._contexts, self._validators, cursor)
            if fallback is not None:
                batch = sorted(batch + next(fallback), key=lambda span: (span[1], span[2], span[0]))
            yield batch


def _confirm(
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


def _on_hit(expression: int, _start: int, end: int, _flags: int, hits: list[list[int]]) -> None:
    hits[expression].append(end)


class _Dense(Exception):
    """A segment's precise scan stopped: more hits than `HyperscanEngine.dense_budget` allows."""


def _expressions(rule: Rule, hs: Any, use_trigger: bool) -> list[tuple[bytes, int]]:
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


def _near_context(
    regions: list[tuple[int, int, int]],
    plan: _Plan,
    data: bytes,
    text: str,
    database: _Database,
    hits: list[list[int]],
    base: int = 0,
    cursor: CharCursor | None = None,
) -> list[tuple[int, int, int]]:
    """The regions whose surroundings hold a context word: a match in a region lies inside it, so its
    context window lies inside the region widened by the window (casefold maps character by
    character, so a word in a match's window is a word in that slice). Cheap where candidates are
    many (a CSV of 12-digit numbers without the word My Number is skipped in one pass).

    The scan has found the words in the bytes (ASCII case ignored): a word in the case-folded text is
    one of those, within 4 bytes per character of the region, unless a character that case-folds into
    a word's characters (`_Plan.context_odd`, such as "ﬁ") is near; only then is the text checked."""
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


def _regions(ends: list[int], back: int, forward: int, size: int) -> list[tuple[int, int, int]]:
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


class CharCursor:
    """Byte offset -> character offset in `text` (UTF-8 `data`), incremental in either direction."""

    __slots__ = ("_b", "_c", "_data", "_identity", "_size")

    def __init__(self, data: bytes, text: str) -> None:
        self._data = data
        self._size = len(data)
        self._identity = len(data) == len(text)  # pure ASCII: offsets agree
        self._b = self._c = 0

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
        if offset >= self._b:
            self._c += len(data[self._b : offset].decode("utf-8", "surrogatepass"))
        else:
            self._c -= len(data[offset : self._b].decode("utf-8", "surrogatepass"))
        self._b = offset
        return self._c


def finish(
    data: bytes,
    text: str,
    byte_spans: list[Span],
    char_spans: list[Span],
    contexts: dict[int, tuple[tuple[str, ...], int]] | None = None,
    validators: dict[int, Validator] | None = None,
    cursor: CharCursor | None = None,
) -> list[Span]:
    """Keep the matches that pass their rule's validator, convert byte spans to character spans
    (rounding out to whole characters), keep the matches of context rules that have a context word
    nearby (`has_context`), merge, sort.

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
    if byte_spans:
        identity = len(data) == len(text)  # pure ASCII: offsets agree
        if not identity:
            byte_spans.sort(key=lambda span: span[1])
        at = (cursor or CharCursor(data, text)).at
        for index, start, end in byte_spans:
            check = validators.get(index)
            if identity:
                if check is None or check(data[start:end].decode("ascii")):
                    char_spans.append((index, start, end))
                continue
            chunk = data[start:end]
            if chunk.isascii():  # whole ASCII characters: the character span is as long
                if check is None or check(chunk.decode("ascii")):
                    char_start = at(start)
                    char_spans.append((index, char_start, char_start + end - start))
            else:
                char_start, char_end = at(start), at(end, round_up=True)
                if check is None or check(text[char_start:char_end]):
                    char_spans.append((index, char_start, char_end))
    if contexts:
        char_spans = [
            span
            for span in char_spans
            if span[0] not in contexts or has_context(text, span[1], span[2], *contexts[span[0]])
        ]
    char_spans.sort(key=lambda span: (span[1], span[2], span[0]))
    return char_spans


def prefilter_expression(pattern: str, verbose: bool = False) -> str:
    """The hyperscan expression for a rule: `pattern` without lookaround assertions (hyperscan's
    prefilter mode would approximate them anyway, at a high cost), without verbose-mode comments, and
    with large bounded repeats widened (see `relax_repeats`). Dropping a constraint can only add
    matches, so every match end of `pattern` is still reported."""
    return relax_repeats(_strip_lookarounds(pattern, verbose))


class UnsupportedSyntax(ValueError):
    """Python syntax that hyperscan would accept with another meaning (so no prefilter guarantee)."""


def _strip_lookarounds(pattern: str, verbose: bool) -> str:
    out: list[str] = []
    i, size = 0, len(pattern)
    while i < size:
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
        elif ch == "[":
            end = _class_end(pattern, i)
            if any(posix in pattern[i + 1 : end - 1] for posix in ("[:", "[=", "[.")):
                # PCRE reads [[:alpha:]] as a POSIX class, Python as a set followed by "]"
                raise UnsupportedSyntax(f"POSIX-like bracket in character class {pattern[i:end]!r}")
            out.append(pattern[i:end])
            i = end
        elif verbose and ch == "#":
            newline = pattern.find("\n", i)
            i = size if newline < 0 else newline
        elif pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            i = _group_end(pattern, i, verbose)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _class_end(pattern: str, i: int) -> int:
    """Index just past the character class starting at pattern[i] == "["."""
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):
        j += 1
    while j < len(pattern):
        if pattern[j] == "\\":
            j += 2
        elif pattern[j] == "]":
            return j + 1
        else:
            j += 1
    return len(pattern)


def _group_end(pattern: str, i: int, verbose: bool) -> int:
    """Index just past the group opening at pattern[i] == "("."""
    depth, j, size = 0, i, len(pattern)
    while j < size:
        ch = pattern[j]
        if ch == "\\":
            j += 2
            continue
        if ch == "[":
            j = _class_end(pattern, j)
            continue
        if verbose and ch == "#":
            newline = pattern.find("\n", j)
            j = size if newline < 0 else newline
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return size


def relax_repeats(pattern: str, limit: int = _RELAX_ABOVE) -> str:
    """`pattern` with bounded repeats {m,n}, n > limit, widened to {min(m, 255),}: a superset that
    hyperscan compiles much faster (a prefilter only needs every real match end reported)."""
    out: list[str] = []
    i, size = 0, len(pattern)
    in_class = False
    while i < size:
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            # a ']' right after '[' or '[^' is a literal member
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("]")
                i += 1
            continue
        if ch == "{":
            close = pattern.find("}", i)
            body = pattern[i + 1 : close] if close > 0 else ""
            low, comma, high = body.partition(",")
            if comma and high.isdigit() and (low.isdigit() or not low):
                low_n = int(low or 0)  # Python reads {,n} as {0,n}; PCRE as a literal
                out.append(f"{{{min(low_n, _RELAX_LOW)},}}" if int(high) > limit else f"{{{low_n},{high}}}")
                i = close + 1
                continue
        out.append(ch)
        i += 1
    return "".join(out)
