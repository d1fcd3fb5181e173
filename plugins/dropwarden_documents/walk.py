"""Take one untrusted file apart, recursively and within limits, into text and image views (in a worker)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from dropwarden.content import (
    DecodeError,
    decode_text,
    looks_like_text,
    printable_strings,
    sniff,
    utf16le_strings,
)
from dropwarden_documents.anchors import PackedAnchors
from dropwarden_documents.settings import DocumentsSettings

CHUNK = 256 * 1024
Within = tuple[str, ...]
# A member name in a problem's detail (an `unscanned` reason, never judged by the rules): digit runs and
# e-mail local parts masked. In findings' `within` names stay as they are: the judge masks them by the rules.
_DIGITS = re.compile(r"\d(?:[\d \-_.]*\d){4,}")
_MAIL = re.compile(r"[^\s@/]+@")


class LimitReached(Exception):
    """A limit of `DocumentsSettings` was reached; `fatal` ones stop the whole file, others a member."""

    def __init__(self, detail: str, *, fatal: bool = False, reason: str = "too_large") -> None:
        super().__init__(detail)
        self.detail = detail
        self.fatal = fatal
        self.reason = reason


class Encrypted(Exception):
    """A part that cannot be read without a password."""


@dataclass
class Outcome:
    """What a walk made: views as plain tuples (they cross a process boundary) and problems."""

    views: list[tuple[Any, ...]] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (reason, detail, where)


def mask_member(name: str) -> str:
    """A member's name fit for a record: runs of 5+ digits and e-mail local parts masked."""
    name = _DIGITS.sub(lambda m: "*" * len(m.group()), name)
    return _MAIL.sub("***@", name)[-200:]


def where(within: Within) -> str:
    return " > ".join(within) or "file"


class Walker:
    """One file's walk: the views made so far, the problems, and the budget every part draws on."""

    def __init__(
        self, limits: DocumentsSettings, find_handler: Callable[[bytes, str], Handler | None]
    ) -> None:
        self.limits = limits
        self.find_handler = find_handler  # the handler of a part's format; None: a leaf
        self.out = Outcome()
        self.bytes_read = 0
        self.text_chars = 0
        self.pages_rendered = 0
        self._count = 0

    # ---------------------------------------------------------------- views and problems

    def text(
        self,
        text: str,
        within: Within,
        anchors: Sequence[tuple[int, int, str]] | None = None,
        *,
        counted: bool = False,
    ) -> None:
        """A text view of `text` found at `within`, with character ranges labelled ("cell B2"), packed
        for the trip out of the worker (`counted`: its characters went through `count_text` already)."""
        if not text.strip():
            return
        if not counted:
            self.count_text(len(text))
        self._count += 1
        provenance: dict[str, Any] = {"source": "document", "within": list(within)}
        if anchors:
            packed = isinstance(anchors, PackedAnchors)
            provenance["anchors"] = anchors if packed else PackedAnchors.pack(anchors)
        self.out.views.append(("text", f"document:{self._count}", text, provenance))

    def count_text(self, size: int) -> None:
        """Count `size` characters of text against documents.max_text_chars; beyond it the walk ends."""
        self.text_chars += size
        if self.text_chars > self.limits.max_text_chars:
            raise LimitReached(
                f"more than documents.max_text_chars={self.limits.max_text_chars} characters of text",
                fatal=True,
            )

    def image(self, data: bytes, image_format: str, within: Within) -> None:
        """An image view (a rendered page, an embedded picture) for OCR and vision."""
        self._count += 1
        provenance = {"source": "document", "within": list(within)}
        self.out.views.append(("image", f"document:{self._count}", data, image_format, provenance))

    def problem(self, reason: str, detail: str, within: Within) -> None:
        self.out.problems.append((reason, detail, where(tuple(mask_member(part) for part in within))))

    # ---------------------------------------------------------------- budget

    def charge(self, size: int) -> None:
        """Count `size` bytes as read from the file; beyond documents.max_total_bytes the walk ends."""
        self.bytes_read += size
        if self.bytes_read > self.limits.max_total_bytes:
            raise LimitReached(
                f"more than documents.max_total_bytes={int(self.limits.max_total_bytes)} bytes extracted",
                fatal=True,
            )

    def read_member(self, stream: IO[bytes], compressed: int | None, name: str) -> bytes:
        """Read a member's bytes as they come (never trusting a declared size) within the per-member
        size, the expansion ratio (after ratio_min_bytes) and the file's total."""
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            self._count_member(size, len(chunk), compressed, name)
            chunks.append(chunk)

    def whole_member(self, content: bytes, compressed: int | None, name: str) -> bytes:
        """A member of at most CHUNK bytes read whole (`zipentry`), counted as `read_member` counts
        its one chunk."""
        self._count_member(len(content), len(content), compressed, name)
        return content

    def _count_member(self, size: int, chunk: int, compressed: int | None, name: str) -> None:
        """`chunk` more bytes of a member read (`size` so far) against the limits."""
        limits = self.limits
        self.charge(chunk)
        if size > limits.max_member_bytes:
            raise LimitReached(
                f"{mask_member(name)}: more than documents.max_member_bytes={int(limits.max_member_bytes)}"
            )
        if (
            compressed is not None
            and size >= limits.ratio_min_bytes
            and size > limits.max_ratio * max(compressed, 1)
        ):
            raise LimitReached(
                f"{mask_member(name)}: expands more than documents.max_ratio={limits.max_ratio:g} times"
            )

    def members(self, items: Iterator[Any] | list[Any], within: Within) -> Iterator[Any]:
        """At most documents.max_members of a container's members; more: a problem, the rest unread."""
        for index, item in enumerate(items):
            if index >= self.limits.max_members:
                self.problem(
                    "too_large",
                    f"more than documents.max_members={self.limits.max_members} members, the rest unread",
                    within,
                )
                return
            yield item

    # ---------------------------------------------------------------- recursion

    def visit(self, data: bytes, within: Within, depth: int, name: str = "") -> None:
        """Judge-ready views of `data` (a file, or a member at `within`): by its sniffed format, a
        container's members recursed one level deeper; a limit, a password or damage is a problem of
        this part only (the total byte and text budgets end the walk)."""
        if depth > self.limits.max_depth:
            self.problem(
                "too_large", f"nested deeper than documents.max_depth={self.limits.max_depth}", within
            )
            return
        handler = self.find_handler(data, name)
        try:
            if handler is None:
                self.leaf(data, within)
            else:
                handler(self, data, within, depth)
        except LimitReached as exc:
            if exc.fatal:
                raise
            self.problem(exc.reason, exc.detail, within)
        except Encrypted as exc:
            self.problem("encrypted", str(exc) or "encrypted without a password", within)
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:  # damage: the type only, a message may quote the content
            self.problem("decode_error", f"cannot be parsed ({type(exc).__name__})", within)
            if looks_like_text(data[:8192]):
                self.leaf_text(data, within)

    def leaf(self, data: bytes, within: Within) -> None:
        """A member that is no container: text decoded, an image handed on, anything else as strings
        (its findings stand, yet it stays unsupported_type)."""
        kind = sniff(data).kind
        if kind == "empty":
            return
        if kind == "text":
            self.leaf_text(data, within)
        elif kind == "image":
            self.image(data, sniff(data).name, within)
        else:
            self.text(printable_strings(data) + "\n" + utf16le_strings(data), (*within, "strings"))
            self.problem("unsupported_type", f"no extractor understands this {sniff(data).name}", within)

    def leaf_text(self, data: bytes, within: Within) -> None:
        try:
            self.text(decode_text(data).text, within)
        except DecodeError:
            self.problem("decode_error", "text in no known encoding", within)


Handler = Callable[["Walker", bytes, Within, int], None]
