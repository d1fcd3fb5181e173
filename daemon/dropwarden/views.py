"""Views of one snapshot that detectors judge: decoded text and images, with their provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class TextView:
    """Decoded text. `name` identifies the view in findings ("text", "ocr:tesseract:3", ...)."""

    name: str
    text: str
    encoding: str
    provenance: dict[str, Any] = field(default_factory=dict)
    kind: str = "text"

    @cached_property
    def utf8(self) -> bytes:
        """The text as UTF-8 bytes: what byte-oriented matchers (hyperscan) scan."""
        return self.text.encode("utf-8", errors="surrogatepass")

    @classmethod
    def from_utf8(
        cls, name: str, text: str, utf8: bytes, provenance: dict[str, Any] | None = None
    ) -> TextView:
        """A view of `text` whose UTF-8 encoding is already at hand (the file's own bytes): `utf8`
        then costs nothing. The caller guarantees `utf8 == text.encode("utf-8")`."""
        view = cls(name, text, "utf-8", provenance or {})
        view.__dict__["utf8"] = utf8  # fills the cached property
        return view


@dataclass(frozen=True)
class ImageView:
    """Raw image bytes as they arrived, with the format sniffed from magic bytes."""

    name: str
    data: bytes
    format: str
    provenance: dict[str, Any] = field(default_factory=dict)
    kind: str = "image"


View = TextView | ImageView
