"""Built-in documents plugin: extractors that turn PDFs, Office files, mail and archives into views."""

from __future__ import annotations

__version__ = "0.1.0"
