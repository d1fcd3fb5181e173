"""The regex detector: engine matches (with context words) -> validators -> allow-list -> findings."""

from __future__ import annotations

import bisect
import fnmatch
import functools
import hashlib
import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from dropwarden import redact
from dropwarden.findings import UNLIMITED, Finding, Findings, FindingTally, Location
from dropwarden.registry import DetectContext
from dropwarden.views import View
from dropwarden_regex.engine import MatchEngine, build_engine
from dropwarden_regex.fold import fold_digits, has_full_width_digits
from dropwarden_regex.rules import Rule, load_rules
from dropwarden_regex.settings import RulesSettings
from dropwarden_regex.textpos import newline_count

VERSION = "1.0.0"

# Finding types whose matched span ends in (or is made of) a password or another secret chosen by a person,
# not a long random token: their excerpt shows no tail of the value at all.
UNTAILED_TYPES = frozenset(
    {"GENERIC_SECRET", "NETRC_PASSWORD", "PGPASS_PASSWORD", "NUGET_PASSWORD", "DOCKER_REGISTRY_AUTH",
     "KUBERNETES_SECRET", "DATABASE_URL", "BASIC_AUTH_URL"}
)  # fmt: skip


class RegexDetector:
    """PII and secret rules over every text view.

    Built from `RulesSettings` (packs, disable, custom, allow, engine, max_match_length); raises
    ValueError naming the setting when a rule is invalid (unknown validator, bad pattern, ...).

    Attributes: `id` ("regex"), `version` (detector version + a hash of the effective rule set and
    allow-list, so a verdict records which rules produced it), `view_kinds`, `rules` (the `Rule`s in
    force), `engine` (the match engine; `engine.name` is "hyperscan" or "python").
    """

    id = "regex"
    view_kinds: ClassVar[frozenset[str]] = frozenset({"text"})

    def __init__(self, rules: RulesSettings | None = None) -> None:
        settings = rules if rules is not None else RulesSettings()
        self.settings = settings
        compiled = _compile_settings(settings.model_dump_json())
        self.rules: list[Rule] = list(compiled.rules)
        self.engine: MatchEngine = compiled.engine
        self.version = compiled.version
        self._allow_values = compiled.allow_values
        self._allow_fingerprints = compiled.allow_fingerprints
        self._allow_patterns = compiled.allow_patterns
        self._allow_paths = compiled.allow_paths
        self.allowing = bool(self._allow_values or self._allow_fingerprints or self._allow_patterns)
        self._rules_of_type: dict[str, set[int]] = {}
        for index, rule in enumerate(self.rules):
            self._rules_of_type.setdefault(rule.type, set()).add(index)
        self.yielding = frozenset(index for index, rule in enumerate(self.rules) if rule.yields)
        # Linear-time matching lets the core call us inline (no thread hand-off per file). Custom
        # rules run through Python's backtracking `re`, so with any of them we take the timeout path.
        self.bounded = self.engine.name == "hyperscan" and not settings.custom

    def settings_digest(self) -> Any:
        """The effective `[rules]` (packs, disable, custom rules, allow-list, engine, max_match_length) as
        JSON: the core's ruleset version hashes it, so a rule change re-judges files left in the folders."""
        return self.settings.model_dump(mode="json")

    def path_allowed(self, display_path: str) -> bool:
        """Whether `rules.allow.paths` exempts this file (fnmatch globs against the display path)."""
        if not self._allow_paths or not display_path:
            return False
        return any(fnmatch.fnmatch(display_path, glob) for glob in self._allow_paths)

    def detect(self, view: View, ctx: DetectContext) -> Findings:
        """Findings in a text view, at most `ctx.limits` of them built: past the caps a match is only
        counted, and past `limits.counted` of a type the engine stops matching that type's rules."""
        if getattr(view, "kind", None) != "text" or self.path_allowed(ctx.display_path):
            return Findings()
        # Rules matched on decoded text need all of it; the others only slices (an ASCII file's
        # view then never decodes the whole file)
        text = view.text if self.engine.needs_text else view.sliceable  # type: ignore[union-attr]
        if not len(text):
            return Findings()
        data: bytes = view.utf8  # type: ignore[union-attr]
        original = text
        if isinstance(text, str) and has_full_width_digits(data):
            # rules read ０９０ー１２３４ー５６７８ as 090-1234-5678; offsets agree character for character
            text = fold_digits(text)
            data = text.encode("utf-8", errors="surrogatepass")
        if self.engine.surely_clean(data):
            return Findings()
        tally = FindingTally(ctx.limits or UNLIMITED)
        done: set[int] = set()  # rules the engine skips from the next batch on
        scan = _Scan(self, view.name, text, ctx, tally, original, data)
        for batch in self.engine.scan_batches(data, text, done, self.yielding):
            if batch:
                scan.take(batch)
                for finding_type in scan.saturated:
                    done.update(self._rules_of_type[finding_type])
                    tally.inexact.add(finding_type)
                scan.saturated.clear()
        scan.flush()
        found = tally.findings()
        ordered = sorted(found, key=lambda f: (f.location.offset, f.location.length, f.type))
        return Findings(ordered, found.omitted, found.inexact)

    def value_allowed(self, finding_type: str, value: str, fingerprint: Callable[[str, str], str]) -> bool:
        """Whether `rules.allow` exempts this value (`fingerprint` is called only if fingerprints are)."""
        if self._allow_fingerprints and fingerprint(finding_type, value).lower() in self._allow_fingerprints:
            return True
        if self._allow_values and redact.normalise_value(value) in self._allow_values:
            return True
        return any(pattern.search(value) for pattern in self._allow_patterns)


_RULE, _END = operator.itemgetter(0), operator.itemgetter(2)  # of a span (rule index, start, end)


class _Scan:
    """One view's matches, taken batch by batch in order of start: allow-list, one finding per value
    (of matches of one type where one span holds another, the longer; at equal spans the more severe,
    then more confident rule), then a finding built only where the tally keeps it.

    A match of a rule that `yields` is dropped where a match of a rule that does not overlaps it (the
    specific type wins; allow-listed or not, so that an allowed token is not reported as generic). Such a
    match is held back to the next batch, whose matches may overlap it (a yielding rule's matches are
    far shorter than a segment), and `flush` takes the last ones."""

    def __init__(
        self,
        detector: RegexDetector,
        view_name: str,
        text: str,
        ctx: DetectContext,
        tally: FindingTally,
        original: str | None = None,
        utf8: bytes | None = None,
    ) -> None:
        self.detector = detector
        self.view_name = view_name
        self.text = text  # what the rules matched: values and fingerprints are read from it
        # newlines are counted in the UTF-8 bytes where offsets agree (ASCII: a view's `sliceable` is
        # then bytes read as text, whose `count` runs in Python), else in the text
        self._lines = utf8 if utf8 is not None and len(utf8) == len(text) else text
        self.original = text if original is None else original  # the view's own text, for excerpts
        self.ctx = ctx
        self.tally = tally
        self.saturated: set[str] = set()
        self._last_end: dict[str, int] = {}  # per type: the end of the last value counted
        self._line, self._line_start, self._scanned = 1, 0, 0
        # (offset, line, line start) of each finding that went further than those before: a held match
        # of a yielding rule, taken after matches that follow it, counts its line from the nearest
        self._marks: list[tuple[int, int, int]] = [(0, 1, 0)]
        self._mark_offsets = [0]
        self._held: list[tuple[int, int, int]] = []  # matches of yielding rules not overlapped so far
        self._others_end = -1  # the furthest end of other rules' matches in the batches before

    def flush(self) -> None:
        """Take the matches held back from the last batch."""
        held, self._held = self._held, []
        if held:
            self._take(held)

    def take(self, batch: list[tuple[int, int, int]]) -> None:
        if self.detector.yielding:
            batch = self._specific_first(batch)
        if batch:
            self._take(batch)

    def _specific_first(self, batch: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """The batch without matches of yielding rules that a match of another rule overlaps; with the
        held matches of the batch before that none of this batch overlaps; holding this batch's others.
        Every match of a batch starts after those of the batches before: one of those overlaps a match
        here if it ends past its start."""
        yielding = self.detector.yielding
        if not self._held and yielding.isdisjoint(map(_RULE, batch)):  # most batches: nothing to drop
            self._others_end = max(self._others_end, max(map(_END, batch)))
            return batch
        starts, reach = [], []  # the other rules' match starts (sorted), the furthest end up to each
        earlier = furthest = self._others_end
        for index, start, end in batch:
            if index not in yielding:
                starts.append(start)
                furthest = max(furthest, end)
                reach.append(furthest)

        def overlapped(start: int, end: int) -> bool:
            before = bisect.bisect_left(starts, end)  # the others starting before this match ends
            return before > 0 and reach[before - 1] > start

        kept = [span for span in self._held if not overlapped(span[1], span[2])]
        self._held = []
        for span in batch:
            if span[0] not in yielding:
                kept.append(span)
            elif span[1] >= earlier and not overlapped(span[1], span[2]):
                self._held.append(span)
        self._others_end = furthest
        return kept

    def _take(self, batch: list[tuple[int, int, int]]) -> None:
        rules = self.detector.rules
        text, tally, last_end = self.text, self.tally, self._last_end
        fingerprint = self.ctx.fingerprint
        allowing = self.detector.allowing
        # at one start: the longer span first, then the more severe and more confident rule
        order = sorted(batch, key=lambda s: (s[1], -s[2], -rules[s[0]].severity, -rules[s[0]].confidence))
        for index, start, end in order:
            rule = rules[index]  # the engine has applied the rule's validator
            finding_type = rule.type
            if end <= last_end.get(finding_type, -1) or finding_type in self.saturated:
                continue  # inside a value of this type already counted; or enough of this type
            value = text[start:end]
            if allowing and self.detector.value_allowed(finding_type, value, fingerprint):
                continue
            last_end[finding_type] = end
            if tally.wants(finding_type, rule.severity):
                tally.add(self._finding(rule, start, end, fingerprint(finding_type, value)))
            else:
                tally.omit(finding_type, rule.severity)
            if tally.saturated(finding_type):
                self.saturated.add(finding_type)

    def _finding(self, rule: Rule, start: int, end: int, fingerprint: str) -> Finding:
        text = self.text
        scanned, line, line_start = self._scanned, self._line, self._line_start
        nearest = bisect.bisect_right(self._mark_offsets, start) - 1
        if start < scanned or self._mark_offsets[nearest] > scanned:
            scanned, line, line_start = self._marks[nearest]
        newlines = newline_count(self._lines, scanned, start)
        if newlines:
            line += newlines
            line_start = text.rfind("\n", scanned, start) + 1
        if start > self._mark_offsets[-1]:
            self._marks.append((start, line, line_start))
            self._mark_offsets.append(start)
        self._scanned, self._line, self._line_start = start, line, line_start
        detector = self.detector
        return Finding(
            type=rule.type,
            rule=rule.id,
            detector=detector.id,
            detector_version=detector.version,
            severity=rule.severity,
            confidence=rule.confidence,
            location=Location(
                view=self.view_name,
                line=line,
                column=start - line_start + 1,
                offset=start,
                length=end - start,
            ),
            excerpt=redact.excerpt(self.original, start, end, tail=rule.type not in UNTAILED_TYPES),
            fingerprint=fingerprint,
        )


@dataclass(frozen=True)
class _Compiled:
    rules: tuple[Rule, ...]
    engine: MatchEngine
    version: str
    allow_values: frozenset[str]
    allow_fingerprints: frozenset[str]
    allow_patterns: tuple[re.Pattern[str], ...]
    allow_paths: tuple[str, ...]


@functools.lru_cache(maxsize=16)
def _compile_settings(settings_json: str) -> _Compiled:
    """Rules, engine and allow-list for one `RulesSettings` (as JSON), cached: building a detector
    again from equal settings (config reload, a detector per chunk) costs a dictionary lookup."""
    settings = RulesSettings.model_validate_json(settings_json)
    rules = load_rules(settings)
    allow = settings.allow
    state: dict[str, Any] = {
        "rules": [
            [
                r.id,
                r.type,
                r.pattern,
                int(r.severity),
                r.confidence,
                r.validator_name,
                list(r.context),
                r.context_window,
                r.ignore_case,
                r.max_length,
                r.yields,
            ]
            for r in rules
        ],
        "allow": allow.model_dump(),
        "max_match_length": settings.max_match_length,
    }
    digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:12]
    return _Compiled(
        rules=tuple(rules),
        engine=build_engine(rules, settings.engine, settings.max_match_length),
        version=f"{VERSION}+rs.{digest}",
        allow_values=frozenset(redact.normalise_value(value) for value in allow.values),
        allow_fingerprints=frozenset(fp.strip().lower() for fp in allow.fingerprints),
        allow_patterns=tuple(re.compile(pattern) for pattern in allow.patterns),
        allow_paths=tuple(allow.paths),
    )
