"""The hyperscan engine: one prefilter scan for all rules, confirmed by Python `re` in small windows."""

from __future__ import annotations

import sys
import threading
from collections.abc import Container, Iterator, Sequence
from typing import Any

from dropwarden_regex.hyperscan_plan import (
    MARGIN,
    CompiledDatabase,
    Hits,
    RulePlan,
    confirm_regions,
    hyperscan_expressions,
    merge_regions,
    near_context,
    record_hit,
    stop_at_first_hit,
    uncovered_regions,
)
from dropwarden_regex.rewrite import UnsupportedSyntax
from dropwarden_regex.rules import Rule
from dropwarden_regex.spans import (
    NOTHING,
    SEGMENT,
    CharCursor,
    LazyRule,
    Span,
    contexts_of,
    finish,
    lazy_batches,
    validators_of,
)


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
    precise database scans the view instead, so confirmation stays proportional to real candidates;
    a view whose triggers already overflow in its first bytes (`trigger_probe`) skips the fast scan.
    The contract is looser than "every match end": an offset inside every match (start <= hit <= end)
    is enough, since such a match still starts at or after `hit - L` and ends before `hit + L`.

    A rule that needs a context word (a Japanese bank account: seven digits near 口座 or 銀行) is not in
    the precise database: a third one holds its expressions, scanned only over windows around its
    words' hits in the segment's scan, wide enough for any match with a word in its context window
    (`_near_hits`). Its candidates far from every word, which the context check would drop, are then
    never reported at all. If it has a trigger, the fast database holds that, as for any rule.

    Rules hyperscan cannot compile even in prefilter mode, and rules with non-ASCII patterns (matched
    against the decoded text; hyperscan's UTF-8 mode is undefined on lone surrogates), fall back one by
    one to `finditer` over the whole text, as `PythonEngine` does for all rules.
    """

    name = "hyperscan"

    def __init__(self, rules: Sequence[Rule], max_match_length: int = 512) -> None:
        import hyperscan

        self._hs = hyperscan
        self._plans = [RulePlan(rule, max_match_length) for rule in rules]
        self._contexts = contexts_of(rules)
        self._validators = validators_of(rules)
        self._local = threading.local()
        # (minimum, bytes per hit): a trigger overflows once it has reported more than `minimum` hits and
        # more than one per `bytes per hit` of the view scanned so far
        self.trigger_budget = (256, 512)
        # (bytes, minimum): the triggers alone are scanned over the view's first `bytes` first; a view
        # where one of them overflows (`minimum` hits, one per `bytes per hit`) there is clearly dense,
        # and goes to the precise database at once: the fast one would be scanned and then abandoned
        self.trigger_probe = (16384, 32)
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
        near: dict[int, list[tuple[bytes, int]]] = {}
        for index, rule in enumerate(rules):
            if rule.unicode:
                continue
            try:
                expressions = hyperscan_expressions(rule, hyperscan, use_trigger=False)
                fast[index] = hyperscan_expressions(rule, hyperscan, use_trigger=True)
            except UnsupportedSyntax:
                continue
            # A rule that needs a context word is scanned, in place of the precise database, only around
            # its words' hits (`_near_hits`): its candidates elsewhere (every 7-digit run, for a bank
            # account) are never reported, so they cost nothing. Its words still come with the other
            # databases; its trigger, if it has one, with the fast database.
            (near if rule.context else precise)[index] = expressions
        self._anchored = frozenset(near) if precise else frozenset()
        if not precise:
            precise, near = near, {}
        self._precise = self._compile_all(precise)
        self._near = self._compile_all(near)
        # how far around a word's hit (its end) a match with that word in its window may lie, and hold
        # the whole of its prefilter match
        self._near_reach = {
            index: 4 * plan.window + 4 + 2 * plan.forward + max(4 * len(word) for word in plan.context)
            for index in self._anchored
            for plan in (self._plans[index],)
        }
        compiled = set(self._precise.rule_expressions) if self._precise else set()
        compiled |= set(self._near.rule_expressions) if self._near else set()
        kept = {index for index in compiled if index not in self._anchored or rules[index].trigger}
        fast = {index: e for index, e in fast.items() if index in kept}
        triggers = {expression for index in compiled if rules[index].trigger for expression in fast[index]}
        self._fast = (self._compile(fast) if triggers else None) or self._precise
        self._trigger_ids = frozenset(
            self._fast.ids[expression] for expression in triggers if self._fast is not self._precise
        )
        self.fallback = [index for index in range(len(rules)) if index not in compiled]
        self.needs_text = any(rules[index].unicode for index in self.fallback)
        # the precise database's ids of every context word expression (scanned first in a dense segment)
        precise_ids = self._precise.ids if self._precise else {}
        words = [(plan.context_words, plan.context_odd) for plan in (self._plans[i] for i in compiled)]
        self._context_ids = tuple(sorted({precise_ids[w] for two in words for w in two if w in precise_ids}))

    def _compile_all(self, wanted: dict[int, list[tuple[bytes, int]]]) -> CompiledDatabase | None:
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

    def _compile(self, wanted: dict[int, list[tuple[bytes, int]]]) -> CompiledDatabase | None:
        """Equal expressions (a trigger shared by several rules) are compiled once; their hits go to
        every rule that names them. The context words of the wanted rules come along, and those of the
        rules scanned only near them."""
        ids: dict[tuple[bytes, int], int] = {}
        rule_expressions = {
            index: tuple(ids.setdefault(expression, len(ids)) for expression in expressions)
            for index, expressions in wanted.items()
        }
        for index in [*wanted, *self._anchored]:
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
        return CompiledDatabase(db, ids, rule_expressions, self._plans)

    def _scratch(self, database: CompiledDatabase | Any) -> Any:
        db = database.db if isinstance(database, CompiledDatabase) else database
        scratches = self._local.__dict__.setdefault("scratches", {})  # per thread
        scratch = scratches.get(id(db))
        if scratch is None:
            scratch = scratches[id(db)] = self._hs.Scratch(db)
        return scratch

    def _segment_hits(self, chunk: bytes, done: Container[int]) -> tuple[CompiledDatabase, Hits] | None:
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
        hits = Hits()
        words = self._group_db(precise, self._context_ids)
        if words is not None:
            words.scan(chunk, match_event_handler=record_hit, context=hits, scratch=self._scratch(words))
        for expression_ids, members, _back, _forward in precise.groups:
            if not any(index not in done and self._context_in(index, precise, hits) for index in members):
                continue
            group = self._group_db(precise, expression_ids)
            if group is None:  # cannot happen (they compiled together); scan everything then
                return self._hits(chunk, precise=True)
            group.scan(chunk, match_event_handler=record_hit, context=hits, scratch=self._scratch(group))
        return precise, hits

    def _near_hits(
        self, chunk: bytes, database: CompiledDatabase, hits: Hits, done: Container[int]
    ) -> tuple[CompiledDatabase, Hits] | None:
        """The hits of the rules scanned only near their context words (`_anchored`) in `chunk`: their
        expressions scanned over windows around the hits of their words (in `hits`, the chunk's scan
        by `database`), wide enough to hold every match that has one of the words within its context
        window, and the whole of its prefilter match."""
        near = self._near
        if near is None:
            return None
        words: list[int] = []
        reach = 0
        for index in self._anchored:
            if index in done or index not in near.rule_expressions or index in database.rule_expressions:
                continue  # done, or not compiled, or the segment's scan held it (by its trigger)
            plan = self._plans[index]
            for literal in (plan.context_words, plan.context_odd):
                if literal is not None and literal in database.ids:
                    words += hits[database.ids[literal]]
            reach = max(reach, self._near_reach[index])
        if not words:
            return None
        near_hits = Hits()
        scratch = self._scratch(near)
        for low, _, high in merge_regions(words, reach, reach, len(chunk)):
            found = Hits()
            near.db.scan(chunk[low:high], match_event_handler=record_hit, context=found, scratch=scratch)
            for expression, ends in found.items():
                near_hits.setdefault(expression, []).extend(low + end for end in ends)
        return near, near_hits

    def _context_in(self, index: int, database: CompiledDatabase, hits: Hits) -> bool:
        """Whether rule `index` needs no context words, or the chunk scanned holds one of its words."""
        plan = self._plans[index]
        if not plan.context:
            return True
        literals = (plan.context_words, plan.context_odd)
        return any(hits[database.ids[literal]] for literal in literals if literal is not None)

    def _group_db(self, database: CompiledDatabase, expression_ids: tuple[int, ...]) -> Any:
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
    ) -> tuple[CompiledDatabase, Hits] | None:
        """Run the fast database (the precise one if asked, or once a trigger overflows its budget).
        With `dense` (minimum, bytes per hit), a precise scan that reports more than `minimum` hits and
        more than one per `bytes per hit` so far stops, raising _Dense."""
        fast = self._fast
        if fast is None:
            return None
        if not precise and self._trigger_ids and self._clearly_dense(data):
            precise = True
        if not precise and self._trigger_ids:
            hits = Hits()
            minimum, per_hit = self.trigger_budget
            dense_minimum, dense_per_hit = dense or (sys.maxsize, 1)
            triggers = self._trigger_ids
            total, dense_stop = 0, False

            def on_hit(expression: int, _start: int, end: int, _flags: int, _context: Any) -> bool | None:
                nonlocal total, dense_stop
                ends = hits.get(expression)
                if ends is None:
                    ends = hits[expression] = []
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
        hits, scratch = Hits(), self._scratch(database)
        if dense is None:
            database.db.scan(data, match_event_handler=record_hit, context=hits, scratch=scratch)
            return database, hits
        minimum, per_hit = dense
        count = 0

        def on_dense_hit(expression: int, _start: int, end: int, _flags: int, _context: Any) -> bool | None:
            nonlocal count
            record_hit(expression, _start, end, _flags, hits)
            count += 1
            return (count > minimum and count > end // per_hit) or None

        try:
            database.db.scan(data, match_event_handler=on_dense_hit, scratch=scratch)
        except self._hs.ScanTerminated:
            raise _Dense from None
        return database, hits

    def _clearly_dense(self, data: bytes) -> bool:
        """Whether a trigger overflows within the view's first `trigger_probe` bytes (scanned with a
        database of the triggers alone); never for a view no longer than that."""
        size, minimum = self.trigger_probe
        if len(data) <= size:
            return False
        probe = self._group_db(self._fast, tuple(sorted(self._trigger_ids)))
        if probe is None:
            return False
        per_hit = self.trigger_budget[1]
        counts: dict[int, int] = {}

        def on_hit(expression: int, _start: int, end: int, _flags: int, _context: Any) -> bool | None:
            count = counts[expression] = counts.get(expression, 0) + 1
            return (count > minimum and count > end // per_hit) or None

        try:
            probe.scan(data[:size], match_event_handler=on_hit, scratch=self._scratch(probe))
        except self._hs.ScanTerminated:
            return True
        return False

    def scan_path(self, data: bytes) -> str:
        """Which database `scan` uses for `data`: "fast" or "precise" (for tests and diagnostics)."""
        found = self._hits(data)
        return "precise" if found is not None and found[0] is not self._fast else "fast"

    def prefilter_hits(self, data: bytes, precise: bool = False) -> dict[int, set[int]]:
        """Rule index -> the end offsets its expressions report in `data` (for tests)."""
        found = self._hits(data, precise) if data else None
        if found is None:
            return {}
        scanned = [found]
        if self._near is not None:  # scanned over the whole of `data` here, not only near context words
            near_hits = Hits()
            self._near.db.scan(
                data, match_event_handler=record_hit, context=near_hits, scratch=self._scratch(self._near)
            )
            scanned.append((self._near, near_hits))
        return {
            index: {end for e in ids for end in hits[e]}
            for database, hits in scanned
            for index, ids in database.rule_expressions.items()
        }

    def surely_clean(self, data: bytes) -> bool:
        """No rule can match in `data`: one segment, no rule falls back, and not one hit of the fast
        database, whose scan stops at the first hit (a view with matches pays little for asking)."""
        fast = self._fast
        if self.fallback or len(data) > self.segment or fast is None:
            return False
        try:
            fast.db.scan(data, match_event_handler=stop_at_first_hit, scratch=self._scratch(fast))
        except self._hs.ScanTerminated:
            return False
        return True

    def scan(self, data: bytes, text: str) -> list[Span]:
        return [span for batch in self.scan_batches(data, text) for span in batch]

    def scan_batches(
        self, data: bytes, text: str, done: Container[int] = NOTHING, yielding: Container[int] = NOTHING
    ) -> Iterator[list[Span]]:
        """One batch per segment [low, high) of the view: the matches that start in it.

        The segment's hyperscan scan covers it and enough around it (`_reach_*`) for every hit of a
        match starting in it, for its windows, and for the context words near them; its regions come
        from the hits ending in [low, high + back). A rule's first window in a segment starts no
        earlier than the end of its last match in the segments before, so, as in one scan of the whole
        view, no window starts inside a match of the whole-text scan. Rules in `fallback` are their
        whole-view `finditer`, taken a segment at a time. Rules in `yielding` are confirmed last, and
        only where the others' matches leave a hit of theirs uncovered (`_with_yielding`)."""
        size = len(data)
        if not size:
            return
        plans = self._plans
        lazy = [
            LazyRule(index, plans[index].regex, plans[index].unicode, data, text) for index in self.fallback
        ]
        fallback = lazy_batches(lazy, data, text, self.segment, done, {}, {}) if lazy else None
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
            deferred: list[tuple[int, list[tuple[int, int, int]], list[int], int]] = []
            if found is not None and found[1]:  # most segments (and names) have no hit at all
                database, hits = found
                first, last = low - base, high + self._reach_back - base
                groups = [(group, hits) for group in database.groups]
                near = self._near_hits(data[base : min(size, high + after)], database, hits, done)
                if near is not None:  # the rules scanned only around their context words
                    groups += [(group, near[1]) for group in near[0].groups]
                for (expression_ids, members, back, forward), group_hits in groups:
                    active = [index for index in members if index not in done]
                    if not active:
                        continue
                    ends = [
                        base + end for x in expression_ids for end in group_hits[x] if first <= end < last
                    ]
                    if not ends:
                        continue
                    regions = merge_regions(ends, back, forward, size)
                    for index in active:
                        plan = plans[index]
                        rule_regions = (
                            near_context(regions, plan, data, text, database, hits, base, context_cursor)
                            if plan.context
                            else regions
                        )
                        if index in yielding:  # confirmed once the others' matches are known
                            deferred.append((index, rule_regions, ends, back))
                            continue
                        resume[index] = confirm_regions(
                            plan.regex.finditer,
                            index,
                            rule_regions,
                            data,
                            low,
                            high,
                            resume[index],
                            byte_spans,
                        )
            if deferred:
                batch = self._with_yielding(data, text, byte_spans, deferred, low, high, resume, cursor)
            else:
                batch = finish(data, text, byte_spans, [], self._contexts, self._validators, cursor)
            if fallback is not None:
                batch = sorted(batch + next(fallback), key=lambda span: (span[1], span[2], span[0]))
            yield batch

    def _with_yielding(
        self,
        data: bytes,
        text: str,
        byte_spans: list[Span],
        deferred: list[tuple[int, list[tuple[int, int, int]], list[int], int]],
        low: int,
        high: int,
        resume: list[int],
        cursor: CharCursor,
    ) -> list[Span]:
        """A segment's batch where rules that yield have regions: the other rules' matches first, then
        the yielding rules' regions but those whose every hit lies strictly inside one of those matches
        (`uncovered_regions`): each match there holds a hit, so overlaps one of them, and the detector
        would drop it. A region whose window reaches within `back` of the next segment is confirmed all
        the same: that segment's windows may start there, and must not start inside its matches."""
        covered: list[tuple[int, int]] = []
        batch = finish(data, text, byte_spans, [], self._contexts, self._validators, cursor, covered)
        size = len(data)
        spans: list[Span] = []
        for index, regions, ends, back in deferred:
            limit = high - back if high < size else size
            if covered:
                regions = uncovered_regions(regions, ends, covered, limit)
            resume[index] = confirm_regions(
                self._plans[index].regex.finditer, index, regions, data, low, high, resume[index], spans
            )
        if not spans:
            return batch
        batch += finish(data, text, spans, [], self._contexts, self._validators, cursor)
        batch.sort(key=lambda span: (span[1], span[2], span[0]))
        return batch


class _Dense(Exception):
    """A segment's precise scan stopped: more hits than `HyperscanEngine.dense_budget` allows."""
