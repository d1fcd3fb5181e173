"""Built-in documents plugin: extractors that turn PDFs, Office files, mail and archives into views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dropwarden.hookspecs import hookimpl
from dropwarden_documents.extractor import VERSION, DocumentsExtractor
from dropwarden_documents.settings import DocumentsSettings, documents_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pydantic import BaseModel

    from dropwarden.config import Settings

__version__ = VERSION
__all__ = [
    "DocumentsExtractor",
    "DocumentsSettings",
    "dropwarden_config_tables",
    "dropwarden_register_extractors",
]


@hookimpl
def dropwarden_config_tables() -> Mapping[str, type[BaseModel]]:
    """The plugin owns `[documents]`: its limits."""
    return {"documents": DocumentsSettings}


@hookimpl
def dropwarden_register_extractors(register: Callable[[Any], None], settings: Settings) -> None:
    """Register the documents extractor unless `enabled = false`."""
    limits = documents_settings(settings)
    if limits.enabled:
        register(DocumentsExtractor(limits))
