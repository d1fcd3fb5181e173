"""The built-in alert sinks, each a notify action: `jsonl` (a file) and `exec` (a program)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class JsonlSink:
    """Appends one JSON object per line and fsyncs (once per batch); opened per batch so rotation just
    works."""

    kind = "notify"

    def __init__(self, sink_id: str, path: Path) -> None:
        self.id = sink_id
        self.path = path

    def describe(self) -> str:
        return f"append each alert as one JSON line to {self.path}"

    def send(self, payload: dict[str, Any]) -> None:
        self._append([payload])

    def send_batch(self, payloads: list[dict[str, Any]]) -> list[Exception | None]:
        """All the lines in one append and one fsync; a failure fails them all (retried, same ids)."""
        self._append(payloads)
        return [None] * len(payloads)

    def _append(self, payloads: list[dict[str, Any]]) -> None:
        data = "".join(
            json.dumps(p, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n" for p in payloads
        ).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
        try:
            view = memoryview(data)
            while view:  # a short write is continued (an error raises: the batch is retried)
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        pass
