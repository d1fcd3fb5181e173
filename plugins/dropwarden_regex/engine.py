"""Multi-pattern matching: the engine interface, the choice and cache of engines, the pure-Python one."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Container, Iterator, Sequence
from typing import Any, Protocol

from dropwarden.config import SettingError
from dropwarden_regex.hyperscan_engine import HyperscanEngine
from dropwarden_regex.rules import Rule
from dropwarden_regex.spans import NOTHING, SEGMENT, LazyRule, Span, contexts_of, lazy_batches, validators_of

_CACHE_SIZE = 16


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

    def scan_batches(
        self, data: bytes, text: str, done: Container[int] = NOTHING, yielding: Container[int] = NOTHING
    ) -> Iterator[list[Span]]:
        """The same matches, one `SEGMENT` of the view at a time: each batch sorted, every match of a
        batch starting after every match of the one before. Rules whose index is in `done` (which the
        caller may add to between batches) are not matched any further, so a caller that has seen
        enough of a rule stops paying for it, and memory stays bounded by a segment's matches. A match
        of a rule in `yielding` may be left out where a match of another rule (one not in `yielding`)
        of its batch overlaps it: a caller that drops such matches anyway need not pay for them."""
        ...

    def surely_clean(self, data: bytes) -> bool:
        """True only if no rule can match in `data`: a quick answer for the common case (a file's name, a
        small clean file), without setting up `scan_batches`; False when it cannot tell cheaply."""
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

    def surely_clean(self, data: bytes) -> bool:
        return False  # nothing cheaper than the scan itself

    def scan_batches(
        self, data: bytes, text: str, done: Container[int] = NOTHING, yielding: Container[int] = NOTHING
    ) -> Iterator[list[Span]]:
        lazy = [LazyRule(index, regex, unicode, data, text) for index, regex, unicode in self._rules]
        yield from lazy_batches(lazy, data, text, self.segment, done, self._contexts, self._validators)
