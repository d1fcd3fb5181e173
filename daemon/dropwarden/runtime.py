"""Assemble the judging machinery from settings: plugins, registry, fingerprint key, judge."""

from __future__ import annotations

from dataclasses import dataclass

from dropwarden.config import Settings
from dropwarden.judge import Judge
from dropwarden.keys import load_or_create_key, usable_state_dir
from dropwarden.plugins import Plugins, build_registry, load_plugins
from dropwarden.redact import Fingerprinter
from dropwarden.registry import Registry


@dataclass
class Runtime:
    settings: Settings
    plugins: Plugins
    registry: Registry
    judge: Judge

    def close(self) -> None:
        self.judge.close()
        for detector in [*self.registry.detectors.values(), *self.registry.extractors.values()]:
            close = getattr(detector, "close", None)
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
    plugins = load_plugins(settings)
    registry = build_registry(plugins, settings)
    key = load_or_create_key(usable_state_dir(settings.state.dir), "fingerprint")
    judge = Judge(registry, settings, Fingerprinter(key))
    return Runtime(settings, plugins, registry, judge)


def ruleset_version(runtime: Runtime) -> str:
    """Changes whenever what judging means changes: rule settings or any detector's id/version.

    The judged-file index is keyed by it, so a new ruleset re-judges files left in the folders.
    """
    import hashlib
    import json

    material = {
        "rules": runtime.settings.rules.model_dump(mode="json"),
        "limits": runtime.settings.limits.model_dump(mode="json"),
        "detectors": sorted((d.id, d.version) for d in runtime.registry.detectors.values()),
        "extractors": sorted((e.id, e.version) for e in runtime.registry.extractors.values()),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]
