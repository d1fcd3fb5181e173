"""`dropwarden config init`: the reference configuration ships with the package and starts a service."""

from __future__ import annotations

import tomllib
from pathlib import Path

from dropwarden.commands.config import reference_text
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]


def test_the_packaged_reference_is_the_repository_reference_file():
    assert reference_text() == (REPO / "etc" / "dropwarden" / "dropwarden.toml").read_text(encoding="utf-8")


def test_init_without_a_watch_writes_the_reference_file_and_says_a_watch_is_missing(tmp_path):
    target = tmp_path / "etc" / "dropwarden.toml"
    done = run_cli("config", "init", "--path", str(target))
    assert done.returncode == 0, done.stderr
    assert target.read_text(encoding="utf-8") == reference_text()
    assert "add a [[watch]]" in done.stdout
    assert target.stat().st_mode & 0o777 == 0o644


def test_init_with_a_watch_writes_a_configuration_that_checks_clean(tmp_path):
    drop = tmp_path / "drop"
    for name in ("inbox", "outbound", ".quarantine"):
        (drop / name).mkdir(parents=True)
    (drop / ".quarantine").chmod(0o700)
    target = tmp_path / "dropwarden.toml"
    done = run_cli(
        "config",
        "init",
        "--path",
        str(target),
        "--watch",
        str(drop / "inbox"),
        "--release-to",
        str(drop / "outbound"),
        "--quarantine-dir",
        str(drop / ".quarantine"),
    )
    assert done.returncode == 0, done.stderr
    watches = tomllib.loads(target.read_text(encoding="utf-8"))["watch"]
    assert watches == [
        {
            "path": str(drop / "inbox"),
            "release_to": str(drop / "outbound"),
            "quarantine_dir": str(drop / ".quarantine"),
        }
    ]
    checked = run_cli("config", "check", "--config", str(target))
    assert checked.returncode == 0, checked.stderr


def test_init_keeps_an_existing_file_unless_forced(tmp_path):
    target = tmp_path / "dropwarden.toml"
    target.write_text("# mine\n")
    kept = run_cli("config", "init", "--path", str(target))
    assert kept.returncode == 2
    assert target.read_text() == "# mine\n"
    forced = run_cli("config", "init", "--path", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert target.read_text(encoding="utf-8") == reference_text()
    assert [p.name for p in tmp_path.iterdir()] == ["dropwarden.toml"], "no partial file left behind"


def test_a_quarantine_dir_without_a_watch_is_a_usage_error(tmp_path):
    done = run_cli("config", "init", "--path", str(tmp_path / "x.toml"), "--quarantine-dir", str(tmp_path))
    assert done.returncode == 2
    assert not (tmp_path / "x.toml").exists()
