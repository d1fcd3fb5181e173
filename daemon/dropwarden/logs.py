"""Logging through structlog: JSON to journald under systemd, readable console otherwise.

Under systemd ($JOURNAL_STREAM names our stderr) each event goes to the journal as one JSON message,
with PRIORITY and DROPWARDEN_* fields when systemd-python is installed (so `journalctl -p warning`
and field matches work), else as a JSON line on stderr, which journald stores the same way. Nothing
sensitive is ever passed to a logger: events carry paths, types, counts and fingerprints, never values.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import structlog

try:  # the `systemd` extra
    from systemd import journal as _journal
except ImportError:  # pragma: no cover - depends on the installation
    _journal = None

_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def under_journald() -> bool:
    """True when stderr is the journal stream systemd connected us to (see systemd.exec(5))."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class JournalLogger:
    """structlog logger that hands each rendered event to journald with structured fields."""

    def msg(self, message: str) -> None:
        event: dict[str, Any] = json.loads(message)
        fields = {
            f"DROPWARDEN_{key.upper()}": value if isinstance(value, str) else json.dumps(value)
            for key, value in event.items()
            if key.isidentifier() and key not in ("timestamp", "level")
        }
        _journal.send(
            message,
            PRIORITY=str(_PRIORITY.get(event.get("level", "info"), 6)),
            SYSLOG_IDENTIFIER="dropwarden",
            **fields,
        )

    log = debug = info = warning = warn = error = critical = exception = msg


def configure(level: str = "info", json_output: bool | None = None) -> None:
    """Route structlog and stdlib logging (watchdog, prometheus) to the journal or stderr."""
    journald = under_journald()
    if json_output is None:
        json_output = journald or not sys.stderr.isatty()
    renderer = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    factory: Any = structlog.PrintLoggerFactory(sys.stderr)
    if journald and json_output and _journal is not None:
        factory = lambda *args: JournalLogger()  # noqa: E731 - structlog wants a factory callable
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
