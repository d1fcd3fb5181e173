"""Logging through structlog: JSON lines under systemd (journald), readable console otherwise."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure(level: str = "info", json_output: bool | None = None) -> None:
    """Route structlog and stdlib logging to stderr. Nothing sensitive is ever passed to a logger:
    events carry paths, types, counts and fingerprints, never matched values."""
    if json_output is None:
        json_output = bool(os.environ.get("JOURNAL_STREAM")) or not sys.stderr.isatty()
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
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
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
