"""Assemble the judging machinery from settings: plugins, registry, fingerprint key, judge."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from dropwarden.config import ConfigError, ConfigProblem, Settings
from dropwarden.judge.judge import Judge
from dropwarden.keys import load_or_create_key, read_key, usable_state_dir
from dropwarden.plugins import Plugins, build_registry, plugins_for
from dropwarden.redact import Fingerprinter
from dropwarden.registry import Registry

log = structlog.get_logger("dropwarden.runtime")


@dataclass
class Runtime:
    settings: Settings
    plugins: Plugins
    registry: Registry
    judge: Judge

    def close(self) -> None:
        """Close the judge and every registered detector, extractor and action that has `close()`."""
        self.judge.close()
        registry = self.registry
        for part in [*registry.detectors.values(), *registry.extractors.values(), *registry.actions.values()]:
            close = getattr(part, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # one failing to close must not stop the others
                    pass

    def health(self) -> dict[str, str]:
        """Degraded reasons reported by detectors (an open circuit breaker, say)."""
        reasons: dict[str, str] = {}
        for detector in self.registry.detectors.values():
            health = getattr(detector, "health", None)
            if health is not None:
                try:
                    reasons.update(health())
                except Exception as exc:
                    reasons[f"detector:{detector.id}"] = f"health check failed: {exc}"
        return reasons


def build_runtime(settings: Settings) -> Runtime:
    """Plugins are those the settings were loaded with (`dropwarden.configload.load_config`)."""
    plugins = plugins_for(settings)
    registry = build_registry(plugins, settings)
    judge = Judge(registry, settings, Fingerprinter(_fingerprint_key(settings)))
    return Runtime(settings, plugins, registry, judge)


def _fingerprint_key(settings: Settings) -> bytes:
    """`[cluster] fingerprint_key_file` when set (one key for every host of a cluster: a value gets the
    same fingerprint whichever judge or watcher saw it), else this install's own key in the state dir."""
    shared = settings.cluster.fingerprint_key_file
    if shared is None:
        return load_or_create_key(usable_state_dir(settings.state.dir), "fingerprint")
    try:
        return read_key(shared)
    except (OSError, ValueError) as exc:
        why = f"cannot read the key ({type(exc).__name__}): 32 random bytes in hex (openssl rand -hex 32)"
        raise ConfigError([ConfigProblem("configuration", "cluster.fingerprint_key_file", why)]) from None


def ruleset_version(runtime: Runtime) -> str:
    """Changes whenever what judging means changes: `[limits]`, or any loaded detector's or extractor's
    id, version or effective settings (`settings_digest()`, see `dropwarden.registry.Detector`).

    The judged-file index is keyed by it, so a new ruleset re-judges files left in the folders on the
    next reconcile: a rule, a `[vision]` category or an OCR language changed alike.
    """
    material = {
        "limits": runtime.settings.limits.model_dump(mode="json"),
        "detectors": _digests(runtime.registry.detectors.values(), "detector"),
        "extractors": _digests(runtime.registry.extractors.values(), "extractor"),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _digests(objects: Iterable[Any], kind: str) -> list[list[Any]]:
    """`[id, version, settings]` per object, by id; settings None where it has no usable digest."""
    entries = []
    for obj in objects:
        settings = None
        method = getattr(obj, "settings_digest", None)
        if method is not None:
            try:
                settings = method()
                json.dumps(settings, sort_keys=True)
            except Exception as exc:  # a plugin's bug costs re-judging on its settings, not the daemon
                log.warning(
                    "settings_digest failed; its settings do not enter the ruleset version",
                    kind=kind,
                    id=obj.id,
                    error=f"{type(exc).__name__}: {exc}",
                )
                settings = None
        entries.append([obj.id, obj.version, settings])
    return sorted(entries, key=lambda entry: str(entry[0]))
