"""File names as judged text: the relative path is view "name", and every output shows it redacted."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from dropwarden.judge.textdecode import DecodeError, decode_text
from dropwarden.redact import mask_value
from dropwarden.views import TextView

NAME_VIEW = "name"
# The same name with the separators that join words in file names ("card-4111….txt", "ssn_123-45-…")
# read as spaces: the rules' boundaries keep digits glued to letters ("ABC-1234") silent in text,
# which in a name would hide exactly what it spells out. Character offsets are the same in both.
WORDS_VIEW = "name:words"
NAME_VIEWS = frozenset({NAME_VIEW, WORDS_VIEW})  # offsets are those of the display text
DECODED_VIEW = "name:decoded"  # a name in a legacy encoding, decoded: its offsets are its own


def display_name(relative: str | bytes) -> str:
    """The printable text of a path's bytes (invalid UTF-8 bytes as \\xNN), as `walk.display_path` shows
    it: what the rules judge and, redacted, what records show."""
    return os.fsencode(relative).decode("utf-8", "backslashreplace")


def judged_name(relative: str | bytes) -> str:
    """The text the rules read for a name: `display_name` with each escaped byte (`\\xNN`) as four
    spaces and each character whose compatibility form is one character (full-width digits and
    letters) in that form. Offsets are those of `display_name`, so spans found here mask the right
    characters; and neither an invalid byte nor a full-width digit can glue itself to a number."""
    raw = os.fsencode(relative)
    if raw.isascii():  # the common case: no escaped byte, and NFKC leaves ASCII as it is
        return raw.decode("ascii")
    out = []
    for shown, _ in _pieces(os.fsencode(relative)):
        if len(shown) > 1:
            out.append(" " * len(shown))
            continue
        folded = unicodedata.normalize("NFKC", shown)
        out.append(folded if len(folded) == 1 else shown)
    return "".join(out)


def name_views(relative: str | bytes) -> list[TextView]:
    """The relative path below the watched folder (or the scanned directory) as text views: as
    `judged_name` reads it, and with word separators as spaces when that changes it."""
    text = judged_name(relative)
    views = [TextView(NAME_VIEW, text, "utf-8", {"source": "name"})]
    words = _as_words(text)
    if words != text:
        views.append(TextView(WORDS_VIEW, words, "utf-8", {"source": "name", "derived_from": NAME_VIEW}))
    legacy = _legacy_decoded(os.fsencode(relative))
    if legacy is not None:
        views.append(legacy)
    return views


def _legacy_decoded(raw: bytes) -> TextView | None:
    """A name that is not UTF-8 but is text in another encoding (a Shift_JIS name written by an SMB
    client) as that text, word separators as spaces. Its offsets are not the display text's, so a
    finding in it hides the whole name (`JudgedName.hidden`)."""
    try:
        raw.decode("utf-8")
        return None
    except UnicodeDecodeError:
        pass
    try:
        decoded = decode_text(raw)
    except DecodeError:
        return None
    text = _as_words(unicodedata.normalize("NFKC", decoded.text))
    return TextView(DECODED_VIEW, text, decoded.encoding, {"source": "name", "derived_from": NAME_VIEW})


def _as_words(text: str) -> str:
    """`_` as a space, `-` next to a letter, `.` between a letter and a digit: "card-4111.txt" reads
    "card 4111 txt", "ssn_123-45-6789.pdf" "ssn 123-45-6789 pdf", while the separators inside a number
    ("090-1234-5678") and a domain's dots stay as they are."""
    chars: list[str] | None = None
    for separator in _SEPARATORS.finditer(text):  # a name is mostly letters: visit only its separators
        index, char = separator.start(), separator.group()
        before = text[index - 1] if index else ""
        after = text[index + 1] if index + 1 < len(text) else ""
        if (
            char == "_"
            or (char == "-" and (before.isalpha() or after.isalpha()))
            or (char == "." and {_kind(before), _kind(after)} == {"letter", "digit"})
        ):
            chars = chars or list(text)
            chars[index] = " "
    return text if chars is None else "".join(chars)


_SEPARATORS = re.compile(r"[_.-]")


def _kind(char: str) -> str:
    return "letter" if char.isalpha() else "digit" if char.isdigit() else ""


@dataclass(frozen=True)
class JudgedName:
    """A relative path and the spans of its display text that a rule matched.

    `hidden` means the name could not be judged (a detector failed on it): then all of it is masked,
    since nothing says which part is safe to show."""

    raw: bytes  # the relative path's bytes
    spans: tuple[tuple[int, int], ...] = ()  # character spans in `display_name(raw)`
    hidden: bool = False

    @property
    def text(self) -> str:
        return display_name(self.raw)

    @property
    def redacted(self) -> bool:
        return self.hidden or bool(self.spans)

    def show(self) -> str:
        """The display text with each matched span masked as an excerpt masks a value."""
        return redact_name(self.raw, self._spans())[0]

    def show_bytes(self) -> bytes:
        """The path's bytes with the same spans masked (for `path_b64` of a name that is not UTF-8)."""
        return redact_name(self.raw, self._spans())[1]

    def show_path(self, display_path: str) -> str:
        """`display_path` (which ends with this relative path) with the name part redacted."""
        if not self.redacted:
            return display_path
        text = self.text
        if display_path.endswith(text):
            return display_path[: len(display_path) - len(text)] + self.show()
        return self.show()  # not ours to cut: show the redacted name alone rather than the raw path

    def _spans(self) -> tuple[tuple[int, int], ...]:
        return ((0, len(self.text)),) if self.hidden else self.spans


def redact_name(raw: bytes, spans: Iterable[tuple[int, int]]) -> tuple[str, bytes]:
    """(display text, bytes) of `raw` with each span of its display text replaced by `[mask]`.

    A span is first widened to whole characters of the display text: an escaped byte (\\xNN, four
    display characters for one byte) is masked entirely or not at all, so the bytes and the text stay
    two renderings of one redacted name."""
    merged = _merge(spans)
    if not merged and raw.isascii():  # the common case: nothing to mask, every byte shown as itself
        return raw.decode("ascii"), raw
    pieces = _pieces(raw)
    starts, offset = [], 0
    for shown, _ in pieces:
        starts.append(offset)
        offset += len(shown)
    text_out, raw_out = [], []
    index = 0
    for start, end in merged:
        first = next((i for i in range(index, len(pieces)) if starts[i] + len(pieces[i][0]) > start), None)
        if first is None or starts[first] >= end:
            continue
        last = first
        while last + 1 < len(pieces) and starts[last + 1] < end:
            last += 1
        for shown, original in pieces[index:first]:
            text_out.append(shown)
            raw_out.append(original)
        value = "".join(shown for shown, _ in pieces[first : last + 1])
        mask = f"[{mask_value(value)}]"
        text_out.append(mask)
        raw_out.append(mask.encode("utf-8"))
        index = last + 1
    for shown, original in pieces[index:]:
        text_out.append(shown)
        raw_out.append(original)
    return "".join(text_out), b"".join(raw_out)


def redact_path(root: str, relative: str | bytes, name: JudgedName | None) -> tuple[str, bytes]:
    """The path `root`/`relative` as (display text, bytes), with the judged name's matched spans
    masked. `name` judged `relative` or its last components; without one (None, or one judged for
    another path) all of `relative` is masked: a name no rule looked at is not shown."""
    rel = os.fsencode(relative)
    if name is None or not (rel == name.raw or rel.endswith(b"/" + name.raw)):
        name = JudgedName(rel, hidden=True)
    full = os.fsencode(os.path.join(root, os.fsdecode(rel)))
    prefix = full[: len(full) - len(name.raw)]
    return display_name(prefix) + name.show(), prefix + name.show_bytes()


def _pieces(raw: bytes) -> list[tuple[str, bytes]]:
    """Each character of the display text with the bytes it stands for."""
    out = []
    for char in raw.decode("utf-8", "surrogateescape"):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte
            out.append((f"\\x{code - 0xDC00:02x}", bytes([code - 0xDC00])))
        else:
            out.append((char, char.encode("utf-8")))
    return out


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
