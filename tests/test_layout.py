"""The code is laid out as the data flows: stage packages in the core, small modules, and built-in plugins
that reach the core only through the plugin API a third-party plugin has."""

from __future__ import annotations

import importlib

from .test_import_graph import import_graph, modules

# What a plugin may import from the core: the hooks, the configuration, what it registers and receives,
# the findings it returns, the GPU gate, masking, and the checks `doctor` shares.
PLUGIN_API = {
    "dropwarden",
    "dropwarden.checks",
    "dropwarden.config",
    "dropwarden.content",
    "dropwarden.findings",
    "dropwarden.gate",
    "dropwarden.hookspecs",
    "dropwarden.images",
    "dropwarden.intake",
    "dropwarden.redact",
    "dropwarden.registry",
    "dropwarden.verdict",
    "dropwarden.views",
}
# Move actions hand a file over through the private store; only the core's own quarantine and release
# are move actions (registry.Action says so), and they use the hand-over the act stage recovers.
MOVE_INTERNALS = {"dropwarden.act.handover", "dropwarden.act.fsops"}
MAX_LINES = 520
STAGES = {"watch", "judge", "act", "audit"}


def test_the_core_is_grouped_by_stage():
    found = modules()
    core = {name for name in found if name.startswith("dropwarden.")}
    for stage in STAGES:
        assert f"dropwarden.{stage}" in core, f"no package dropwarden.{stage}"
    assert {"dropwarden.watch.settle", "dropwarden.judge.extract", "dropwarden.act.stage"} <= core
    flat = {name for name in core if name.count(".") == 1 and found[name].name != "__init__.py"}
    assert len(flat) <= 25, f"{len(flat)} modules sit flat in the core: {sorted(flat)}"


def test_no_module_is_longer_than_a_reader_can_hold():
    too_long = {
        name: lines
        for name, path in modules().items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}


def test_builtin_plugins_reach_the_core_only_through_the_plugin_api():
    for name, targets in import_graph().items():
        if name.startswith("dropwarden."):
            continue
        core = {t for t in targets if t == "dropwarden" or t.startswith("dropwarden.")}
        allowed = PLUGIN_API | (MOVE_INTERNALS if name == "dropwarden_actions.moves" else set())
        assert core <= allowed, f"{name} imports {sorted(core - allowed)}"


def test_every_plugin_api_module_imports_where_plugins_have_always_found_it():
    for name in PLUGIN_API:
        importlib.import_module(name)
    from dropwarden.intake import Snapshot
    from dropwarden.judge.intake import Snapshot as StageSnapshot

    assert Snapshot is StageSnapshot
