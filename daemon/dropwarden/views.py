"""Views of one snapshot that detectors judge: decoded text and images, with their provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

# A text view's provenance "anchors" are (start, end, label) character ranges, in order; a finding in one
# is placed at the view's "within" then the label, which may name several steps ("slide 2", "notes")
# joined by this character (one no label otherwise holds).
ANCHOR_STEPS = "\x1f"


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

    @classmethod
    def from_ascii(cls, name: str, data: bytes, provenance: dict[str, Any] | None = None) -> TextView:
        """A view of ASCII bytes (the caller guarantees `data.isascii()`) whose `text` is decoded only
        when first read: a detector that reads `sliceable` instead never holds a second copy."""
        view = object.__new__(_AsciiTextView)
        for key, value in (("name", name), ("encoding", "utf-8"), ("provenance", provenance or {})):
            object.__setattr__(view, key, value)
        object.__setattr__(view, "kind", "text")
        view.__dict__["utf8"] = data
        return view

    def with_provenance(self, provenance: dict[str, Any]) -> TextView:
        """The same text under other provenance, sharing its bytes (`dataclasses.replace` cannot build a
        view whose text is decoded on first read)."""
        if isinstance(self, _AsciiTextView):
            return TextView.from_ascii(self.name, self.utf8, provenance)
        view = TextView(self.name, self.text, self.encoding, provenance, self.kind)
        if "utf8" in self.__dict__:
            view.__dict__["utf8"] = self.__dict__["utf8"]
        return view

    @property
    def sliceable(self) -> str | AsciiText:
        """The text, for code that only measures, slices, counts and finds in it (`AsciiText`'s
        operations): for a view of ASCII bytes, the bytes read as text a slice at a time."""
        return self.text


class AsciiText:
    """ASCII bytes read as text: `len`, slices (str), `count`, `find` and `rfind` of a str; nothing is
    decoded but the slices taken."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, key: slice | int) -> str:
        if isinstance(key, slice):
            return self._data[key].decode("ascii")
        return chr(self._data[key])

    def count(self, sub: str, start: int | None = None, end: int | None = None) -> int:
        return self._data.count(sub.encode("ascii"), start, end)

    def find(self, sub: str, start: int | None = None, end: int | None = None) -> int:
        return self._data.find(sub.encode("ascii"), start, end)

    def rfind(self, sub: str, start: int | None = None, end: int | None = None) -> int:
        return self._data.rfind(sub.encode("ascii"), start, end)


class _AsciiTextView(TextView):
    """A TextView of ASCII bytes (`TextView.from_ascii`): `text` is decoded on first read, and kept."""

    @property  # type: ignore[override]
    def text(self) -> str:
        text = self.__dict__.get("_text")
        if text is None:
            text = self.__dict__["_text"] = self.utf8.decode("ascii")
        return text

    @property
    def sliceable(self) -> str | AsciiText:
        text = self.__dict__.get("_text")
        return text if text is not None else AsciiText(self.utf8)


@dataclass(frozen=True)
class ImageView:
    """Raw image bytes as they arrived, with the format sniffed from magic bytes."""

    name: str
    data: bytes
    format: str
    provenance: dict[str, Any] = field(default_factory=dict)
    kind: str = "image"


View = TextView | ImageView
