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


def build_runtime(settings: Settings) -> Runtime:
    plugins = load_plugins(settings)
    registry = build_registry(plugins, settings)
    key = load_or_create_key(usable_state_dir(settings.state.dir), "fingerprint")
    judge = Judge(registry, settings, Fingerprinter(key))
    return Runtime(settings, plugins, registry, judge)
