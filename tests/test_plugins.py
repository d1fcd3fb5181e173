"""Plugin loading: third-party plugins installed by pip, broken ones skipped, allow-list, strict mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dropwarden.config import Settings
from dropwarden.hookspecs import hookimpl
from dropwarden.plugins import PluginLoadError, build_registry, load_plugins

from .conftest import install_plugins, run_cli

GOOD = '''
"""A third-party detector: reports the marker ACME-CONFIDENTIAL."""
from dropwarden.findings import Finding, Location, Severity
from dropwarden.hookspecs import hookimpl


class AcmeDetector:
    id = "acme"
    version = "1.2.3"
    view_kinds = frozenset({"text"})

    def detect(self, view, ctx):
        at = view.text.find("ACME-CONFIDENTIAL")
        if at < 0:
            return []
        return [Finding("ACME_MARKER", "acme.marker", self.id, self.version, Severity.HIGH, 1.0,
                        Location(view.name, offset=at), "[marker]", ctx.fingerprint("ACME_MARKER", "m"))]


@hookimpl
def dropwarden_register_detectors(register):
    register(AcmeDetector())


@hookimpl
def dropwarden_register_commands(cli):
    @cli.command()
    def acme():
        """Say hello from the acme plugin."""
        print("acme says hello")
'''

BROKEN_IMPORT = """
raise ImportError("acme_broken needs a library that is not installed")
"""

BROKEN_REGISTER = """
from dropwarden.hookspecs import hookimpl


class Half:
    id = "half"
    version = "0"
    view_kinds = frozenset({"text"})

    def detect(self, view, ctx):
        return []


@hookimpl
def dropwarden_register_detectors(register, settings):
    register(Half())
    raise RuntimeError("registration blew up half-way")
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """Third-party plugins really installed by pip into a separate site directory."""
    root = tmp_path_factory.mktemp("plugins")
    site = root / "site"
    return install_plugins(
        root,
        site,
        [
            ("acme_good", GOOD, 'acme = "acme_good"'),
            ("acme_broken", BROKEN_IMPORT, 'acme-broken = "acme_broken"'),
            ("acme_badref", "X = 1\n", 'acme-badref = "acme_badref:does_not_exist"'),
            ("acme_half", BROKEN_REGISTER, 'acme-half = "acme_half"'),
        ],
    )


def _env(site: Path, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": str(site), **extra}


def test_plugins_lists_installed_plugins_with_registrations_versions_and_errors(plugin_site, write_config):
    config = write_config()
    result = run_cli("plugins", "--json", "--config", str(config), env=_env(plugin_site))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    by_name = {p["name"]: p for p in report["plugins"]}
    assert by_name["acme"]["version"] == "1.2.3"
    assert by_name["acme"]["distribution"] == "acme-good"
    assert {"kind": "detector", "id": "acme", "version": "1.2.3"} in by_name["acme"]["registered"]
    assert any(r["id"] == "regex" for r in by_name["regex"]["registered"])
    errors = {e["plugin"]: e for e in report["errors"]}
    assert errors["acme-broken"]["stage"] == "import"
    assert "not installed" in errors["acme-broken"]["error"]
    assert errors["acme-badref"]["stage"] == "import"
    assert errors["acme-half"]["stage"] == "register"
    assert "half" not in {r["id"] for p in report["plugins"] for r in p["registered"]}


def test_a_third_party_detector_judges_files_and_adds_commands(plugin_site, write_config, tmp_path):
    config = write_config()
    target = tmp_path / "memo.txt"
    target.write_text("quarterly numbers, ACME-CONFIDENTIAL, do not share\n")
    result = run_cli("scan", "--format", "json", "--config", str(config), str(target), env=_env(plugin_site))
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)["files"][0]["findings"]
    assert [f["type"] for f in findings] == ["ACME_MARKER"]
    assert "warning: plugin acme-broken" in result.stderr

    hello = run_cli("acme", env=_env(plugin_site))
    assert hello.returncode == 0 and "acme says hello" in hello.stdout


def test_the_allow_list_loads_only_named_plugins(plugin_site, write_config):
    config = write_config()
    env = _env(plugin_site, DROPWARDEN_LOAD_PLUGINS="regex")
    report = json.loads(run_cli("plugins", "--json", "--config", str(config), env=env).stdout)
    assert [p["name"] for p in report["plugins"]] == ["regex"]
    assert set(report["skipped"]) == {
        "acme",
        "acme-broken",
        "acme-badref",
        "acme-half",
        "actions",
        "documents",
        "ocr",
        "vision",
    }
    assert report["errors"] == []


def test_the_allow_list_can_also_come_from_the_configuration(plugin_site, write_config):
    config = write_config('[plugins]\nallow = ["acme"]\n')
    report = json.loads(run_cli("plugins", "--json", "--config", str(config), env=_env(plugin_site)).stdout)
    assert [p["name"] for p in report["plugins"]] == ["acme"]


def test_strict_mode_makes_a_broken_plugin_fatal(plugin_site, write_config, tmp_path):
    config = write_config()
    target = tmp_path / "a.txt"
    target.write_text("hello\n")
    env = _env(plugin_site, DROPWARDEN_STRICT_PLUGINS="1")
    result = run_cli("scan", "--config", str(config), str(target), env=env)
    assert result.returncode == 2
    assert "acme-badref" in result.stderr or "acme-broken" in result.stderr


def test_loading_calls_no_hook_and_registration_is_isolated_per_plugin():
    class EntryPointStub:
        """Stands in for importlib's EntryPoint: name, value, dist and load()."""

        def __init__(self, name, obj):
            self.name, self.value, self.dist, self._obj = name, f"{name}:obj", None, obj

        def load(self):
            if isinstance(self._obj, Exception):
                raise self._obj
            return self._obj

    calls = []

    class Counting:
        @hookimpl
        def dropwarden_register_detectors(self, register, settings):
            calls.append("register")

    plugins = load_plugins(
        Settings(),
        entry_points_=[EntryPointStub("ok", Counting()), EntryPointStub("bad", ValueError("boom"))],
        environ={},
    )
    assert calls == []
    assert [p.name for p in plugins.plugins] == ["ok"]
    assert [e.name for e in plugins.errors] == ["bad"]
    build_registry(plugins, Settings())
    assert calls == ["register"]

    with pytest.raises(PluginLoadError):
        load_plugins(
            Settings(),
            entry_points_=[EntryPointStub("bad", ValueError("boom"))],
            environ={"DROPWARDEN_STRICT_PLUGINS": "1"},
        )
