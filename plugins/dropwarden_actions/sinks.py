"""The built-in alert sinks, each a notify action: `jsonl` (a file) and `exec` (a program)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class JsonlSink:
    """Appends one JSON object per line and fsyncs; opened per batch so rotation just works."""

    kind = "notify"

    def __init__(self, sink_id: str, path: Path) -> None:
        self.id = sink_id
        self.path = path

    def describe(self) -> str:
        return f"append each alert as one JSON line to {self.path}"

    def send(self, payload: dict[str, Any]) -> None:
        line = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        pass
