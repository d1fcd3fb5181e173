"""Built-in regex PII/secret detector plugin: registers `RegexDetector` (and the keystore extractor)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dropwarden.hookspecs import Check, hookimpl
from dropwarden_regex import textpos
from dropwarden_regex.detector import VERSION, RegexDetector
from dropwarden_regex.keystore import KEYSTORE_RULE, KeystoreExtractor
from dropwarden_regex.settings import RulesSettings, rules_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from pydantic import BaseModel

    from dropwarden.config import Settings

__version__ = VERSION
__all__ = [
    "KeystoreExtractor",
    "RegexDetector",
    "__version__",
    "dropwarden_config_tables",
    "dropwarden_doctor_checks",
    "dropwarden_register_detectors",
    "dropwarden_register_extractors",
]


@hookimpl
def dropwarden_config_tables() -> Mapping[str, type[BaseModel]]:
    """The regex plugin owns `[rules]`."""
    return {"rules": RulesSettings}


@hookimpl
def dropwarden_register_detectors(register: Callable[[Any], None], settings: Settings) -> None:
    """Register the regex detector built from `[rules]` (packs, custom rules, allow-list)."""
    register(RegexDetector(rules_settings(settings)))


@hookimpl
def dropwarden_register_extractors(register: Callable[[Any], None], settings: Settings) -> None:
    """Register the keystore extractor (binary PKCS#12/JKS/JCEKS files as base64, view "keystore")
    while the rule that reports that view, `secrets.keystore_base64`, is in force."""
    detector = RegexDetector(rules_settings(settings))  # compiled once: the same settings are cached
    if any(rule.id == KEYSTORE_RULE for rule in detector.rules):
        register(KeystoreExtractor())


@hookimpl
def dropwarden_doctor_checks(settings: Settings) -> Iterator[Check]:
    """`dropwarden doctor`: the engine the rules run on, and whether offsets are counted in C."""
    detector = RegexDetector(rules_settings(settings))
    engine, rules = detector.engine.name, f"{len(detector.rules)} rules"
    if engine == "hyperscan" or detector.settings.engine == "python":
        yield Check("regex engine", "ok", f"{engine}, {rules}")
    else:
        yield Check("regex engine", "warn", f"{engine}, {rules}: hyperscan is not importable (slower)")
    if textpos.ACCELERATED:
        yield Check("regex offsets", "ok", "counted in C (dropwarden_regex._textpos)")
    else:
        detail = "counted in Python: the C extension was not built (needs a C compiler, Python headers)"
        yield Check("regex offsets", "warn", detail)
