"""The documents plugin's settings: the `[documents]` table it owns, read through `documents_settings`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ByteSize, ConfigDict, Field

if TYPE_CHECKING:
    from dropwarden.config import Settings

MIB = 1024 * 1024


class DocumentsSettings(BaseModel):
    """Limits on what one dropped file may cost to take apart; beyond each: `unscanned`, too_large
    (or timeout), naming the limit, with every finding made before it standing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    max_depth: int = Field(default=10, ge=1)  # containers inside containers
    max_members: int = Field(default=10_000, ge=1)  # members of one container
    max_total_bytes: ByteSize = ByteSize(512 * MIB)  # bytes extracted from one file, as actually read
    max_member_bytes: ByteSize = ByteSize(128 * MIB)  # bytes of one member, as actually read
    max_ratio: float = Field(default=100.0, gt=1)  # expansion of a member over its compressed size ...
    ratio_min_bytes: ByteSize = ByteSize(1 * MIB)  # ... checked once this much was read from it
    max_pages: int = Field(default=2_000, ge=1)  # pages of one PDF
    max_rendered_pages: int = Field(default=20, ge=0)  # PDF pages without text rendered for OCR
    render_dpi: int = Field(default=150, ge=36, le=600)
    max_text_chars: int = Field(default=64 * MIB, ge=1)  # text of all views of one file
    file_timeout: float = Field(default=60.0, gt=0)  # wall time per file, in its worker
    worker_cpu_seconds: int = Field(default=60, ge=1)  # CPU time per file (RLIMIT_CPU)
    worker_memory: ByteSize = ByteSize(2048 * MIB)  # address space of a worker (RLIMIT_AS)
    worker_open_files: int = Field(default=64, ge=16)  # RLIMIT_NOFILE of a worker
    worker_max_files: int = Field(default=100, ge=1)  # a worker is replaced after this many files
    workers: int = Field(default=2, ge=1, le=64)


def documents_settings(settings: Settings) -> DocumentsSettings:
    """The plugin's settings: its own table `[documents]` (defaults when absent)."""
    return settings.table("documents", DocumentsSettings)
