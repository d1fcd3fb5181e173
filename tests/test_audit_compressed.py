"""`audit verify` reads the files logrotate rotated and compressed (the packaged logrotate settings:
compress, delaycompress, no copytruncate): the chain across them checks out, and a compressed file cut
short shows as damaged, never as a traceback or as intact."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import require
from .test_audit import assert_cli_damaged, cli_verify, write_log


def logrotate(log_path: Path, state: Path) -> None:
    config = log_path.with_name("logrotate.conf")
    config.write_text(
        f"{log_path} {{\n  rotate 10\n  missingok\n  nocopytruncate\n  nocreate\n  compress\n"
        "  delaycompress\n}\n"
    )
    result = subprocess.run(
        [shutil.which("logrotate") or "logrotate", "-f", "-s", str(state), str(config)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def rotated_compressed(tmp_path: Path, state_dir: Path, write_config: Any) -> tuple[list[Path], Path]:
    """Four rotations by the real logrotate; the files oldest first: .4.gz .3.gz .2.gz .1 and the live one."""
    require(shutil.which("logrotate") is not None, "logrotate")
    log_path = tmp_path / "audit.jsonl"
    for _ in range(4):
        write_log(log_path, state_dir, appends=3)
        logrotate(log_path, tmp_path / "logrotate.state")
    write_log(log_path, state_dir, appends=3)
    files = [log_path.with_name(f"audit.jsonl.{n}.gz") for n in (4, 3, 2)]
    files += [log_path.with_name("audit.jsonl.1"), log_path]
    assert all(f.exists() for f in files), sorted(p.name for p in tmp_path.iterdir())
    assert files[0].read_bytes()[:2] == b"\x1f\x8b", "logrotate compressed it"
    return files, write_config()


def test_rotated_and_compressed_files_verify_together(rotated_compressed):
    files, config = rotated_compressed
    out = cli_verify(*map(str, files), "--config", str(config))
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert len(lines) == 5 and all(": OK: 6 records" in line for line in lines), out.stdout
    assert lines[0].endswith(f"continued by {files[1]}") and lines[-1].endswith("anchor matched")


def test_a_compressed_file_cut_short_is_damaged(rotated_compressed):
    files, config = rotated_compressed
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 2])
    out = cli_verify(*map(str, files), "--config", str(config))
    assert out.exit_code == 1, out.output
    assert f"{files[1]}: DAMAGED" in out.stdout and "compressed file is cut short" in out.stdout
    assert f"{files[0]}: OK" in out.stdout


def test_a_compressed_file_left_out_shows(rotated_compressed):
    files, config = rotated_compressed
    out = cli_verify(str(files[0]), *map(str, files[2:]), "--config", str(config))
    assert_cli_damaged(out, 1, 0, "does not continue")
