"""The regex detector: engine matches (with context words) -> validators -> allow-list -> findings."""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from dropwarden import redact
from dropwarden.config import RulesSettings
from dropwarden.findings import Finding, Location
from dropwarden.registry import DetectContext
from dropwarden.views import View
from dropwarden_regex.engine import MatchEngine, build_engine
from dropwarden_regex.rules import Rule, load_rules

VERSION = "1.0.0"


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
        # Linear-time matching lets the core call us inline (no thread hand-off per file). Custom
        # rules run through Python's backtracking `re`, so with any of them we take the timeout path.
        self.bounded = self.engine.name == "hyperscan" and not settings.custom

    def path_allowed(self, display_path: str) -> bool:
        """Whether `rules.allow.paths` exempts this file (fnmatch globs against the display path)."""
        return bool(display_path) and any(fnmatch.fnmatch(display_path, glob) for glob in self._allow_paths)

    def detect(self, view: View, ctx: DetectContext) -> list[Finding]:
        if getattr(view, "kind", None) != "text" or self.path_allowed(ctx.display_path):
            return []
        text: str = view.text  # type: ignore[union-attr]
        if not text:
            return []
        spans = self.engine.scan(view.utf8, text)  # type: ignore[union-attr]
        if not spans:
            return []
        rules = self.rules
        kept: list[tuple[Rule, int, int, str, str]] = []
        for index, start, end in spans:
            rule = rules[index]  # the engine has applied the rule's validator
            value = text[start:end]
            fingerprint = ctx.fingerprint(rule.type, value)
            if self._value_allowed(value, fingerprint):
                continue
            kept.append((rule, start, end, value, fingerprint))
        return self._findings(view.name, text, _dedupe(kept))

    def _value_allowed(self, value: str, fingerprint: str) -> bool:
        if fingerprint.lower() in self._allow_fingerprints:
            return True
        if self._allow_values and redact.normalise_value(value) in self._allow_values:
            return True
        return any(pattern.search(value) for pattern in self._allow_patterns)

    def _findings(
        self, view_name: str, text: str, kept: list[tuple[Rule, int, int, str, str]]
    ) -> list[Finding]:
        findings = []
        line, line_start, scanned = 1, 0, 0
        for rule, start, end, _value, fingerprint in kept:  # sorted by start
            newlines = text.count("\n", scanned, start)
            if newlines:
                line += newlines
                line_start = text.rfind("\n", scanned, start) + 1
            scanned = start
            findings.append(
                Finding(
                    type=rule.type,
                    rule=rule.id,
                    detector=self.id,
                    detector_version=self.version,
                    severity=rule.severity,
                    confidence=rule.confidence,
                    location=Location(
                        view=view_name,
                        line=line,
                        column=start - line_start + 1,
                        offset=start,
                        length=end - start,
                    ),
                    excerpt=redact.excerpt(text, start, end),
                    fingerprint=fingerprint,
                )
            )
        return findings


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


def _dedupe(kept: list[tuple[Rule, int, int, str, str]]) -> list[tuple[Rule, int, int, str, str]]:
    """One finding per value: of matches of the same type where one span contains the other, keep the
    longer (at equal spans, the more severe, then more confident rule). Result sorted by start."""
    if len(kept) < 2:
        return kept
    ordered = sorted(kept, key=lambda k: (k[0].type, k[1], -k[2], -k[0].severity, -k[0].confidence))
    out = []
    last_type, last_end = None, -1
    for item in ordered:
        rule, _start, end = item[0], item[1], item[2]
        if rule.type == last_type and end <= last_end:
            continue  # inside a kept span of the same type
        if rule.type != last_type:
            last_type, last_end = rule.type, -1
        last_end = max(last_end, end)
        out.append(item)
    out.sort(key=lambda k: (k[1], k[2], k[0].type))
    return out
