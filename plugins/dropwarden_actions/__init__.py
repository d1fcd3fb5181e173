"""Built-in actions plugin: quarantine, release and the alert sinks, registered as any plugin's are."""

from __future__ import annotations

__version__ = "0.1.0"
