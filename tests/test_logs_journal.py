"""journald priorities without systemd-python: when stderr is the journal stream, each log line starts
with its sd-daemon priority (`<N>`, sd-daemon(3)), which journald strips and stores as PRIORITY."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LOGGING_CHILD = """
import logging, structlog
from dropwarden import logs
logs._journal = None  # as installed without the `systemd` extra
logs.configure("debug")
log = structlog.get_logger()
log.debug("looked", n=1)
log.info("judged", outcome="finding")
log.warning("sink failing", sink="soc")
log.error("decision not recordable", error="MemoryError")
log.critical("audit log unusable")
logging.getLogger("watchdog").warning("inotify overflow")
"""


def run_logging_child(stderr_path: Path, journal_stream: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with stderr_path.open("w") as stderr:
        if journal_stream:
            st = os.fstat(stderr.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", LOGGING_CHILD], stderr=stderr, env=env, check=True, timeout=60)
    return stderr_path.read_text().splitlines()


def test_each_line_on_the_journal_stream_carries_its_levels_priority(tmp_path):
    lines = run_logging_child(tmp_path / "stderr", journal_stream=True)
    priorities = {}
    for line in lines:
        assert line.startswith("<") and ">" in line, line
        prefix, _, rest = line.partition(">")
        event = json.loads(rest)  # one JSON object after the prefix, nothing else
        priorities[event["event"]] = int(prefix[1:])
    assert priorities == {
        "looked": 7,
        "judged": 6,
        "sink failing": 4,
        "decision not recordable": 3,
        "audit log unusable": 2,
        "inotify overflow": 4,  # stdlib loggers (watchdog, prometheus) too
    }


def test_lines_are_not_prefixed_when_stderr_is_not_the_journal(tmp_path):
    lines = run_logging_child(tmp_path / "stderr", journal_stream=False)
    assert len(lines) == 6
    assert all(json.loads(line)["event"] for line in lines)  # plain JSON lines, as before
