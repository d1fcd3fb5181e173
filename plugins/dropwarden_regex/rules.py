"""Rule loading: the built-in packs, custom rules and the disable list, validated into `Rule` objects."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from dropwarden.config import SettingError
from dropwarden.findings import Severity
from dropwarden_regex.settings import RulesSettings
from dropwarden_regex.validators import VALIDATORS, Validator, unknown_validator

Where = tuple[str | int, ...] | str  # a configuration key ("rules", "custom", 0) or a pack rule's name

PACKS = ("pii", "secrets")
_PACK_KEYS = frozenset(
    {"id", "type", "pattern", "severity", "confidence", "validator", "context", "context_window",
     "ignore_case", "max_length", "prefilter", "trigger", "hit_back", "yields", "description"}
)  # fmt: skip
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_TYPE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_LOOKAHEAD_OPS = (sre_parse.ASSERT, sre_parse.ASSERT_NOT)


@dataclass(frozen=True, eq=False)
class Rule:
    """One compiled rule.

    `regex` is a bytes pattern matched against the view's UTF-8 bytes (ASCII semantics for \\d \\w \\b),
    unless `unicode` is set: patterns holding non-ASCII characters, or str-only syntax, are matched
    against the decoded text instead. `prefilter` (packs only) holds optional cheaper expressions for
    hyperscan that together report an offset inside every match of `pattern`, and `hit_back` how far
    before such a hit a match may start (default: its longest match); `trigger` (packs only) is
    a coarser such expression shared by several rules ("a digit run"), used while it fires rarely
    (see `engine.HyperscanEngine`). `width` is the (min, max) match length in bytes (characters for
    unicode rules), max uncapped; `lookahead` is how far lookaheads may read past a match. `yields`
    (packs only) marks a catch-all rule (the keyword-assigned generic secret): where a match of a rule
    that does not yield overlaps one of its matches, only the former is reported (`detector._Scan`);
    the hyperscan engine then does not confirm its windows whose hits all lie inside such matches.
    """

    id: str
    type: str
    pattern: str
    severity: Severity
    confidence: float
    validator_name: str | None
    validator: Validator | None
    context: tuple[str, ...]
    context_window: int
    ignore_case: bool
    max_length: int | None
    prefilter: tuple[str, ...] | None
    trigger: str | None
    source: str
    unicode: bool
    regex: re.Pattern[Any]
    width: tuple[int, int]
    lookahead: int
    hit_back: int | None = None
    yields: bool = False

    def engine_key(self) -> tuple[Any, ...]:
        """What the matching engines depend on (rules with equal keys compile to the same matcher)."""
        return (
            self.pattern,
            self.ignore_case,
            self.max_length,
            self.prefilter,
            self.trigger,
            self.context,
            self.context_window,
            self.hit_back,
        )


def problem(where: Where, key: str, message: str) -> ValueError:
    """An error about `key` of the rule at `where`: a `SettingError` (which `dropwarden config check`
    reports against the file and key it came from) for configuration keys, else a ValueError."""
    if isinstance(where, tuple):
        return SettingError((*where, key) if key else where, message)
    return ValueError(f"{where}.{key}: {message}" if key else f"{where}: {message}")


def compile_rule(spec: dict[str, Any], source: str, where: Where) -> Rule:
    """Validate one rule table (pack entry or custom rule) and compile it; errors name `where`."""
    rule_id = spec.get("id")
    if not isinstance(rule_id, str) or not _ID.match(rule_id):
        raise problem(where, "id", f"expected a lower-case rule id like 'pii.email' (got {rule_id!r})")
    rule_type = spec.get("type")
    if not isinstance(rule_type, str) or not _TYPE.match(rule_type):
        raise problem(where, "type", f"expected a finding type like 'EMAIL' (got {rule_type!r})")
    pattern = spec.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise problem(where, "pattern", "expected a non-empty regular expression")
    try:
        severity = Severity.parse(spec.get("severity", "medium"))
    except ValueError as exc:
        raise problem(where, "severity", str(exc)) from None
    confidence = float(spec.get("confidence", 0.8))
    if not 0.0 <= confidence <= 1.0:
        raise problem(where, "confidence", f"must be between 0 and 1 (got {confidence})")
    validator_name = spec.get("validator")
    if validator_name and validator_name not in VALIDATORS:
        raise problem(where, "validator", unknown_validator(validator_name))
    validator = VALIDATORS[validator_name] if validator_name else None
    context = tuple(str(word).casefold() for word in spec.get("context", ()) if str(word).strip())
    context_window = int(spec.get("context_window", 64))
    if context_window < 1:
        raise problem(where, "context_window", "must be at least 1")
    ignore_case = bool(spec.get("ignore_case", False))
    max_length = spec.get("max_length")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        raise problem(where, "max_length", f"expected a positive integer (got {max_length!r})")
    prefilter = spec.get("prefilter")
    if prefilter is not None:
        prefilter = (prefilter,) if isinstance(prefilter, str) else tuple(prefilter)
    trigger = spec.get("trigger")
    for key, expressions in (("prefilter", prefilter or ()), ("trigger", (trigger,) if trigger else ())):
        for expression in expressions:
            try:
                re.compile(expression.encode("ascii"))
            except (re.error, UnicodeEncodeError, AttributeError) as exc:
                raise problem(where, key, f"invalid ASCII regular expression: {exc}") from None

    hit_back = spec.get("hit_back")
    if hit_back is not None:
        if not isinstance(hit_back, int) or hit_back < 1:
            raise problem(where, "hit_back", f"expected a positive integer (got {hit_back!r})")
        if not prefilter or trigger:
            raise problem(where, "hit_back", "needs a `prefilter` and no `trigger`")

    yields = spec.get("yields", False)
    if not isinstance(yields, bool):
        raise problem(where, "yields", f"expected true or false (got {yields!r})")

    regex, unicode = _compile(pattern, ignore_case, where)
    parsed = sre_parse.parse(regex.pattern, regex.flags)
    width = parsed.getwidth()
    if width[0] == 0:
        raise problem(where, "pattern", "the pattern can match the empty string")
    return Rule(
        id=rule_id,
        type=rule_type,
        pattern=pattern,
        severity=severity,
        confidence=confidence,
        validator_name=validator_name,
        validator=validator,
        context=context,
        context_window=context_window,
        ignore_case=ignore_case,
        max_length=max_length,
        prefilter=prefilter,
        trigger=trigger,
        source=source,
        unicode=unicode,
        regex=regex,
        width=width,
        lookahead=_lookahead_reach(parsed),
        hit_back=hit_back,
        yields=yields,
    )


def _compile(pattern: str, ignore_case: bool, where: Where) -> tuple[re.Pattern[Any], bool]:
    flags = re.IGNORECASE if ignore_case else 0
    if pattern.isascii():
        try:
            return re.compile(pattern.encode("ascii"), flags), False
        except re.error:
            pass  # str-only syntax (\N{...}, \u...): match the decoded text instead
    try:
        return re.compile(pattern, flags), True
    except re.error as exc:
        raise problem(where, "pattern", f"invalid regular expression: {exc}") from None


def _lookahead_reach(parsed: Any) -> int:
    """The longest a lookahead inside `parsed` may read, in pattern units (bounded by 1 MiB)."""
    reach = 0
    stack = [parsed]
    while stack:
        node = stack.pop()
        for op, av in node:
            if op in _LOOKAHEAD_OPS:
                direction, sub = av
                if direction == 1:
                    reach = max(reach, min(sub.getwidth()[1], 1 << 20) + _lookahead_reach(sub))
                stack.append(sub)
            elif isinstance(av, sre_parse.SubPattern):
                stack.append(av)
            elif isinstance(av, tuple | list):
                for item in av:
                    if isinstance(item, sre_parse.SubPattern):
                        stack.append(item)
                    elif isinstance(item, list):
                        stack.extend(sub for sub in item if isinstance(sub, sre_parse.SubPattern))
    return reach


def load_pack(name: str) -> list[Rule]:
    """The rules of built-in pack `name` ("pii", "secrets"), in file order."""
    if name not in PACKS:
        raise SettingError(("rules", "packs"), f"unknown pack {name!r} (known: {', '.join(PACKS)})")
    text = resources.files("dropwarden_regex").joinpath("packs", f"{name}.toml").read_text("utf-8")
    data = tomllib.loads(text)
    rules = []
    for index, spec in enumerate(data.get("rule", [])):
        where = f"pack {name}: rule[{index}]"
        unknown = set(spec) - _PACK_KEYS
        if unknown:
            raise problem(where, "", f"unknown keys {sorted(unknown)}")
        rule = compile_rule(spec, f"pack:{name}", where)
        if rule.unicode:  # a stray non-ASCII character (even in a comment) would change the semantics
            raise problem(where, "pattern", "pack patterns must be ASCII (UTF-8 bytes as \\xNN escapes)")
        rules.append(rule)
    return rules


def load_rules(settings: RulesSettings) -> list[Rule]:
    """Packs in order, then custom rules; minus `settings.disable` (ids or globs like "pii.phone.*").

    Raises ValueError naming the setting on: an unknown validator, an invalid or empty-matching
    pattern, a custom id that repeats another rule's id, a disable entry that matches no rule.
    """
    every: list[Rule] = []
    for pack in dict.fromkeys(settings.packs):
        every.extend(load_pack(pack))
    # Rules of packs not loaded still count as known ids (for `disable` and id clashes).
    known_ids = {rule.id for rule in every}
    for pack in PACKS:
        if pack not in settings.packs:
            known_ids.update(rule.id for rule in load_pack(pack))
    for index, custom in enumerate(settings.custom):
        where: Where = ("rules", "custom", index)
        spec = custom.model_dump()
        if spec["id"] in known_ids:
            raise problem(where, "id", f"rule id {spec['id']!r} is already used by another rule")
        rule = compile_rule(spec, "custom", where)
        known_ids.add(rule.id)
        every.append(rule)

    disabled: set[str] = set()
    for index, entry in enumerate(settings.disable):
        hits = {rule_id for rule_id in known_ids if fnmatch.fnmatchcase(rule_id, entry)}
        if not hits:
            raise SettingError(("rules", "disable", index), f"no rule matches {entry!r}")
        disabled |= hits
    return [rule for rule in every if rule.id not in disabled]
