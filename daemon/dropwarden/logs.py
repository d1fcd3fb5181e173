"""Logging through structlog: JSON to journald under systemd, readable console otherwise.

Under systemd ($JOURNAL_STREAM names our stderr) each event goes to the journal as one JSON message,
with PRIORITY and DROPWARDEN_* fields when systemd-python is installed (so `journalctl -p warning`
and field matches work), else as a JSON line on stderr prefixed with its sd-daemon priority (`<4>{...}`,
see sd-daemon(3)), which journald strips and stores as PRIORITY (`SyslogLevelPrefix=`, on by default). Nothing
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


def _prefixed(priority: int, write: Any) -> Any:
    def emit(message: str) -> None:
        write(f"<{priority}>" + message.replace("\n", "\n" + f"<{priority}>"))

    return emit


class PriorityPrintLogger:
    """structlog logger writing each rendered event to a stream as one line with an `<N>` prefix: the
    priority of the method structlog calls (its level), for journald to store as PRIORITY."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        for method, priority in {**_PRIORITY, "exception": 3, "warn": 4, "msg": 6, "log": 6}.items():
            setattr(self, method, _prefixed(priority, self._write))

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()


class PriorityFormatter(logging.Formatter):
    """Prefix a stdlib record's formatted line with its sd-daemon priority (see PriorityPrintLogger)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        priority = _PRIORITY.get(level, 2 if record.levelno >= logging.CRITICAL else 6)
        return f"<{priority}>" + self._inner.format(record).replace("\n", f"\n<{priority}>")


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
    prefix = journald and _journal is None  # the journal reads `<N>` as the line's priority
    if journald and json_output and _journal is not None:
        factory = lambda *args: JournalLogger()  # noqa: E731 - structlog wants a factory callable
    elif prefix:
        factory = lambda *args: PriorityPrintLogger(sys.stderr)  # noqa: E731
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=shared,
    )
    handler.setFormatter(PriorityFormatter(formatter) if prefix else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
