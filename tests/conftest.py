"""Shared fixtures: configuration files, running the real CLI, and the CI rule that missing parts fail."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str) -> None:
    """Skip when a component is missing on a developer machine; fail in CI, where it must be present."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but missing")
    pytest.skip(f"{what} is not available")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def write_config(tmp_path: Path, state_dir: Path):
    """Write a config file with the given TOML body; a drop-in beside it keeps state and audit in tmp_path."""

    def write(body: str = "", name: str = "dropwarden.toml") -> Path:
        path = tmp_path / "etc" / name
        dropins = path.parent / (path.stem + ".d")
        dropins.mkdir(parents=True, exist_ok=True)
        (dropins / "00-test-paths.toml").write_text(
            f'[state]\ndir = "{state_dir}"\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
        )
        path.write_text(body)
        return path

    return write


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run `python -m dropwarden ARGS` as a real process, as an operator would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DROPWARDEN_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "dropwarden", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def _package(root: Path, name: str, module_source: str, entry_point: str) -> Path:
    src = root / name
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text(textwrap.dedent(module_source))
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "{name.replace("_", "-")}"
            version = "1.2.3"
            [project.entry-points.dropwarden]
            {entry_point}
            [tool.setuptools]
            packages = ["{name}"]
            """
        )
    )
    return src


def install_plugins(root: Path, site: Path, packages: list[tuple[str, str, str]]) -> Path:
    """Build each (name, module source, entry point line) as a distribution and pip-install them all
    into `site`, a separate directory to put on PYTHONPATH: a real third-party installation."""
    sources = [_package(root, name, source, entry_point) for name, source, entry_point in packages]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            *map(str, sources),
        ],
        check=True,
        capture_output=True,
    )
    return site
