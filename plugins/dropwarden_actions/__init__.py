"""Built-in actions plugin: quarantine, release and the alert sinks (jsonl, exec), registered as any plugin's."""

from __future__ import annotations

__version__ = "0.1.0"
