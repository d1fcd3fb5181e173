"""Configuration: file, drop-ins and environment; `config check` names file, key and problem."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from dropwarden.config import ConfigError, Settings
from dropwarden.configload import load_config

from .conftest import REPO, run_cli


def _embedded_default(monkeypatch, tmp_path):
    """The configuration with no file at all: every table, the plugins' included, at its defaults."""
    monkeypatch.setattr("dropwarden.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    return load_config(None, environ={}).settings


def test_the_example_file_is_exactly_the_embedded_default(monkeypatch, tmp_path):
    example = REPO / "etc" / "dropwarden" / "dropwarden.toml"
    default = _embedded_default(monkeypatch, tmp_path)
    assert {"rules", "vision", "ocr"} <= set(type(default).model_fields), "the plugins' tables count too"
    assert load_config(example, environ={}).settings.model_dump() == default.model_dump()


def _models(model, prefix=""):
    for name, field in model.model_fields.items():
        nested = _nested_models(field.annotation)
        yield prefix + name, nested[0] if nested else None
        for inner in nested:  # each alert sink type's model, say
            yield from _models(inner, prefix + name + ".")


def _nested_models(annotation) -> list[type[BaseModel]]:
    """The models inside an annotation: `X`, `list[X]`, `X | None`, a (discriminated) union of models."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()):
        found += [m for m in _nested_models(arg) if m not in found]
    return found


def test_the_example_file_documents_every_setting(monkeypatch, tmp_path):
    """Every key of the core's tables and of each built-in plugin's table is in the reference file."""
    text = (REPO / "etc" / "dropwarden" / "dropwarden.toml").read_text()
    for dotted, nested in _models(type(_embedded_default(monkeypatch, tmp_path))):
        key = dotted.rsplit(".", 1)[-1]
        if nested is not None:
            assert re.search(rf"^(# )?\[\[?{re.escape(dotted)}\]?\]", text, re.M), f"[{dotted}] undocumented"
        else:
            assert re.search(rf"^(# )?{key} *=|\[{re.escape(dotted)}\.", text, re.M), f"{dotted} undocumented"


def test_a_missing_default_file_means_embedded_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr("dropwarden.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    loaded = load_config(None, environ={})
    plugin_tables = set(loaded.settings.model_dump()) - set(Settings.model_fields)
    assert loaded.settings.model_dump(exclude=plugin_tables) == Settings().model_dump()
    assert loaded.files == ()


def test_drop_ins_merge_in_name_order_and_arrays_of_tables_append(write_config):
    main = write_config(
        '[[rules.custom]]\nid = "a"\ntype = "A"\npattern = "a+"\n[limits]\ndetector_timeout = 5\n'
    )
    dropins = main.parent / "dropwarden.d"
    dropins.mkdir(exist_ok=True)
    (dropins / "20-late.toml").write_text("[limits]\ndetector_timeout = 7\n")
    (dropins / "10-early.toml").write_text(
        '[limits]\ndetector_timeout = 6\nmax_file_size = "1MiB"\n'
        '[[rules.custom]]\nid = "b"\ntype = "B"\npattern = "b+"\n'
    )
    settings = load_config(main, environ={}).settings
    assert settings.limits.detector_timeout == 7
    assert settings.limits.max_file_size == 1024 * 1024
    assert [rule.id for rule in settings.rules.custom] == ["a", "b"]


def test_environment_overrides_files(write_config):
    path = write_config('[rules]\nengine = "python"\n')
    settings = load_config(path, environ={"DROPWARDEN_RULES__ENGINE": "hyperscan"}).settings
    assert settings.rules.engine == "hyperscan"


def test_errors_name_the_drop_in_that_set_the_bad_key(write_config):
    main = write_config()
    (main.parent / "dropwarden.d").mkdir(exist_ok=True)
    (main.parent / "dropwarden.d" / "50-bad.toml").write_text("[limits]\ndetector_timeot = 3\n")
    with pytest.raises(ConfigError) as raised:
        load_config(main, environ={})
    (problem,) = raised.value.problems
    assert problem.source.endswith("50-bad.toml")
    assert problem.key == "limits.detector_timeot"
    assert "did you mean 'detector_timeout'" in problem.message


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        ("[audit]\npth = 'x'\n", "audit.pth", "unknown key"),
        ("[rulez]\npacks = []\n", "rulez", "unknown key"),
        ("[limits]\ndetector_timeout = 'soon'\n", "limits.detector_timeout", "valid number"),
        ("[rules]\npacks = ['pii', 'nonsense']\n", "rules.packs[1]", "'pii' or 'secrets'"),
        (
            "[[rules.custom]]\nid = 'x'\ntype = 'X'\npattern = '(unclosed'\n",
            "rules.custom[0].pattern",
            "invalid regular expression",
        ),
        (
            "[[rules.custom]]\nid = 'x'\ntype = 'X'\npattern = 'x'\nseverity = 'dire'\n",
            "rules.custom[0].severity",
            "unknown severity",
        ),
        ("[rules.allow]\npatterns = ['[z-a]']\n", "rules.allow.patterns", "invalid regular expression"),
    ],
)
def test_config_check_prints_one_line_naming_file_key_and_problem(write_config, body, key, message):
    path = write_config(body)
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: {key}: ")
    assert message in lines[0]


def test_config_check_reports_every_problem_not_just_the_first(write_config):
    path = write_config("[audit]\npth = 'x'\n[limits]\ndetector_timeout = -1\n")
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 2
    keys = sorted(line.split(": ")[1] for line in result.stderr.strip().splitlines())
    assert keys == ["audit.pth", "limits.detector_timeout"]


def test_config_check_names_an_environment_override(write_config):
    path = write_config()
    result = run_cli("config", "check", "--config", str(path), env={"DROPWARDEN_AUDIT__FSYNC": "sometimes"})
    assert result.returncode == 2
    assert result.stderr.startswith("environment DROPWARDEN_AUDIT__FSYNC: audit.fsync: ")


def test_config_check_reports_toml_syntax_errors_with_the_file(write_config):
    path = write_config("[audit\n")
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"{path}: (top level): TOML syntax error")


def test_config_check_refuses_a_missing_explicit_file(tmp_path: Path):
    result = run_cli("config", "check", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "configuration file not found" in result.stderr


def test_config_check_accepts_a_valid_file(write_config):
    path = write_config("[[rules.custom]]\nid = 'acme.emp'\ntype = 'EMPLOYEE_ID'\npattern = 'EMP-[0-9]{6}'\n")
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_config_check_reports_an_unknown_validator_as_a_configuration_problem(write_config):
    path = write_config(
        "[[rules.custom]]\nid = 'acme.emp'\ntype = 'EMPLOYEE_ID'\npattern = 'EMP'\nvalidator = 'no_such_check'\n"
    )
    result = run_cli("config", "check", "--config", str(path))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"{path}: rules.custom[0].validator: ")
    assert "no_such_check" in line
