"""A plugin owns its settings: its table is validated with its model, like the core's, with the same errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import install_plugins, run_cli

# A third-party plugin that owns the table [acme] and provides the alert sink type "acme-siem".
ACME = """
from typing import Literal

from pydantic import Field

from dropwarden.config import SinkSettings, Strict
from dropwarden.hookspecs import hookimpl


class AcmeSettings(Strict):
    endpoint: str = "https://acme.invalid/"
    batch: int = Field(default=10, ge=1, le=100)


class AcmeSinkSettings(SinkSettings):
    type: Literal["acme-siem"]
    url: str


@hookimpl
def dropwarden_config_tables():
    return {"acme": AcmeSettings}


@hookimpl
def dropwarden_alert_sink_types():
    return {"acme-siem": AcmeSinkSettings}


@hookimpl
def dropwarden_doctor_checks(settings):
    from dropwarden.hookspecs import Check

    acme = settings.table("acme", AcmeSettings)
    yield Check("acme table", "ok", f"endpoint={acme.endpoint} batch={acme.batch}")
"""


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("acme")
    entry_points = 'acme = "acme_tables"\n[project.entry-points."dropwarden.tables"]\nacme = "acme_tables"'
    return install_plugins(root, root / "site", [("acme_tables", ACME, entry_points)])


def _env(site: Path, **extra: str) -> dict[str, str]:
    inherited = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), inherited])), **extra}


def test_a_third_party_table_is_validated_by_its_model_and_a_bad_value_names_file_and_key(
    acme_site, write_config
):
    config = write_config('[acme]\nendpoint = "https://siem.example/"\nbatch = 500\n')
    result = run_cli("config", "check", "--config", str(config), env=_env(acme_site))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"{config}: acme.batch: Input should be less than or equal to 100 (got 500)"
    ]


def test_a_valid_third_party_table_reaches_its_plugin_typed(acme_site, write_config):
    config = write_config("[acme]\nbatch = 7\n")
    assert run_cli("config", "check", "--config", str(config), env=_env(acme_site)).returncode == 0
    result = run_cli("doctor", "--config", str(config), env=_env(acme_site))
    assert "endpoint=https://acme.invalid/ batch=7" in result.stdout


def test_an_environment_variable_overrides_a_key_of_a_plugin_table(acme_site, write_config):
    config = write_config("[acme]\nbatch = 7\n")
    env = _env(acme_site, DROPWARDEN_ACME__BATCH="9")
    assert "batch=9" in run_cli("doctor", "--config", str(config), env=env).stdout
    bad = run_cli("config", "check", "--config", str(config), env={**env, "DROPWARDEN_ACME__BATCH": "0"})
    assert bad.returncode == 2
    assert bad.stderr.startswith("environment DROPWARDEN_ACME__BATCH: acme.batch: "), bad.stderr


def test_a_table_no_plugin_owns_is_an_error(write_config):
    config = write_config("[nobody]\nsetting = 1\n")
    result = run_cli("config", "check", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{config}: nobody: unknown key: no loaded plugin owns this table"


def test_a_table_whose_plugin_the_allow_list_excludes_is_an_error_naming_the_plugin(acme_site, write_config):
    config = write_config('[plugins]\nallow = ["regex"]\n[acme]\nbatch = 7\n')
    result = run_cli("config", "check", "--config", str(config), env=_env(acme_site))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"{config}: acme: this table belongs to plugin 'acme', which is not loaded (not in the allow list)"
    )


def test_an_alert_sink_is_validated_by_the_model_of_its_type(acme_site, write_config):
    config = write_config('[[alerts.sink]]\ntype = "acme-siem"\nname = "siem"\n')
    result = run_cli("config", "check", "--config", str(config), env=_env(acme_site))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{config}: alerts.sink[0].url: Field required"


def test_an_alert_sink_of_an_unknown_type_is_an_error_naming_the_type(write_config):
    config = write_config('[[alerts.sink]]\ntype = "carrier-pigeon"\npath = "/tmp/x"\n')
    result = run_cli("config", "check", "--config", str(config))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith(
        f"{config}: alerts.sink[0].type: no loaded plugin provides alert sink type 'carrier-pigeon' (known: "
    )
    assert "'jsonl'" in line
