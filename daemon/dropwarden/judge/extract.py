"""Extract views from a snapshot: the primary view by sniffed type, then plugin extractors' views."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dropwarden.judge.framing import EndNotFound, image_end
from dropwarden.judge.intake import Snapshot
from dropwarden.judge.metadata import metadata_view
from dropwarden.judge.sniff import FileType, looks_like_text, sniff, utf16_without_bom
from dropwarden.judge.textdecode import DecodeError, decode_text
from dropwarden.judge.trailing import printable_strings, trailing_view, utf16le_strings
from dropwarden.registry import Extractor, Incomplete
from dropwarden.verdict import Problem, Reason
from dropwarden.views import ImageView, TextView, View

# Images appended one after another after the file's image, each judged as an image; more: too_large.
MAX_APPENDED = 4
# Rounds of the extraction chain (a PDF page rendered to an image, then OCR of it, ...); views still
# appearing after the last one leave the file unscanned.
MAX_ROUNDS = 6
# Printable strings of a binary nothing understands, judged by the text rules.
MAX_STRINGS_BYTES = 64 * 1024 * 1024

if TYPE_CHECKING:
    from dropwarden.judge.detect import DetectorRun, DetectorRunner


@dataclass
class Extraction:
    file_type: FileType
    views: list[View] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def unjudged(self, runs: Iterable[DetectorRun]) -> Problem | None:
        """Never "clean" by default: the problem when part of the file was judged by nothing.

        Each of the file's own views (the decoded text; the image and the bytes after its end) must be
        judged by a detector, or have a view derived from it (OCR text) that one judged; a file with no
        view of its own (a PDF an extractor read) needs some view judged. None when extraction already
        failed (that problem stands) or the file is empty."""
        if self.file_type.kind == "empty" or self.problems:
            return None
        judged = {run.view for run in runs}
        # the file's own views, and those of its contents (a PDF page's text or image): each must be judged
        own = [view for view in self.views if view.provenance.get("source") in ("file", "document")]
        derived = {view.provenance.get("derived_from") for view in self.views if view.name in judged}
        if own:
            missing = [view.name for view in own if view.name not in judged and view.name not in derived]
        else:
            # a strings view is a safety net: its findings stand, but it never makes a file judged
            understood = {view.name for view in self.views if view.provenance.get("source") != "strings"}
            missing = [] if judged & understood else [self.file_type.name]
        if not missing:
            return None
        name = self.file_type.name
        if own and len(missing) < len(own):
            detail = f"no detector judges the {' or '.join(missing)} of this {name} file"
        else:
            detail = f"no detector judges {name} files"
        return Problem(Reason.UNSUPPORTED, detail, "judge")


def extract_views(snapshot: Snapshot, extractors: Iterable[Extractor], runner: DetectorRunner) -> Extraction:
    """The file's own views (decoded text; or the image, its metadata as text, the bytes after its end
    as text, and any image appended there as an image), then the extraction chain (`run_chain`).

    A file sniffed as an image or a container whose parsing failed, and whose bytes look like text, is
    judged as text too: a magic number at its start never hides its text. A binary that no extractor
    understood gets a *strings* view (`strings_view`): its findings stand, yet alone it never makes the
    file judged (`Extraction.unjudged`), so such a file without findings stays unsupported_type.
    """
    file_type = sniff(snapshot.data)
    out = Extraction(file_type)
    if file_type.kind == "text":
        try:
            out.views.append(text_view(snapshot.data))
        except DecodeError as exc:
            out.problems.append(Problem(Reason.DECODE_ERROR, str(exc), "text"))
    elif file_type.kind == "image":
        _add_image(out, snapshot.data, file_type.name, runner.max_trailing_bytes)
    run_chain(out, snapshot, list(extractors), runner)
    if file_type.kind in ("image", "binary"):
        _add_text_fallback(out, snapshot.data)
    return out


def run_chain(
    out: Extraction, snapshot: Snapshot, extractors: list[Extractor], runner: DetectorRunner
) -> None:
    """Extractors in rounds, in registration order within a round. Each call gets the views new since
    that extractor's last call (all views on its first): an extractor with `view_kinds` is called in
    any round where such views are new (OCR reads the page images a PDF extractor rendered in the round
    before); one without is called once, in the first round, for the snapshot itself. At most
    MAX_ROUNDS rounds: views still appearing after them leave the file unscanned (too_large).

    Extractors run through `runner`: in a worker thread, bounded by its timeout, unless the extractor
    sets `bounded = True`. Failures and timeouts become problems (the file is then never "clean"), as
    detectors' do; an extractor raising `Incomplete` keeps the views it made."""
    seen = [0] * len(extractors)  # how many of out.views each extractor has been offered
    for round_number in range(MAX_ROUNDS + 1):
        called = False
        for index, extractor in enumerate(extractors):
            kinds = getattr(extractor, "view_kinds", None)
            if kinds is None and round_number:
                continue
            new = out.views[seen[index] :]
            seen[index] = len(out.views)
            if kinds is not None and not any(view.kind in kinds for view in new):
                continue  # nothing for it here: no thread hand-off for, say, OCR on a text file
            if round_number == MAX_ROUNDS:
                detail = f"views still appearing after {MAX_ROUNDS} rounds of extraction (MAX_ROUNDS)"
                out.problems.append(Problem(Reason.TOO_LARGE, detail, "extraction chain"))
                return
            called = True
            _call_extractor(out, extractor, snapshot, new, runner)
        if not called:
            return


def _call_extractor(
    out: Extraction, extractor: Extractor, snapshot: Snapshot, views: list[View], runner: DetectorRunner
) -> None:
    source = f"extractor {extractor.id}"
    try:
        inline = getattr(extractor, "bounded", False)
        out.views.extend(runner.call(extractor.extract, snapshot, views, inline=inline))
    except Incomplete as exc:  # what it read stands, with the problem
        out.views.extend(exc.results)
        out.problems.append(Problem.from_exception(exc, source))
    except TimeoutError:
        out.problems.append(runner.timed_out(source))
    except Exception as exc:
        out.problems.append(Problem.from_exception(exc, source))


def _add_text_fallback(out: Extraction, data: bytes) -> None:
    """An image or container whose parsing failed is read as text too when its bytes look like text;
    a binary that no extractor made a view of gets its printable strings as view "strings"."""
    parse_failed = any(p.reason in (Reason.DECODE_ERROR, Reason.DETECTOR_ERROR) for p in out.problems)
    if parse_failed and looks_like_text(data[:8192]):
        try:
            view = text_view(data)
        except DecodeError:
            pass
        else:
            out.views.append(view.with_provenance({"source": "fallback", "read_as": "text"}))
            return
    if out.file_type.kind == "binary" and not any(v.provenance.get("source") != "name" for v in out.views):
        out.views.append(strings_view(data))


def strings_view(data: bytes) -> TextView:
    """View "strings": the runs of printable ASCII/UTF-8 and of UTF-16LE text in the first
    MAX_STRINGS_BYTES of `data`, one per line (`strings`, both encodings)."""
    head = data[:MAX_STRINGS_BYTES]
    text = printable_strings(head) + "\n" + utf16le_strings(head)
    return TextView("strings", text, "strings", {"source": "strings", "bytes": len(head)})


def text_view(data: bytes) -> TextView:
    """The file's text, view "text". ASCII is its own UTF-8, so its view decodes nothing unless a
    detector reads `text` (the regex detector reads `sliceable`): no second copy of a large file."""
    provenance = {"source": "file"}
    if data.isascii() and utf16_without_bom(data[:8192]) is None:
        return TextView.from_ascii("text", data, provenance)
    decoded = decode_text(data)
    if decoded.utf8 is not None:
        return TextView.from_utf8("text", decoded.text, decoded.utf8, provenance)
    return TextView("text", decoded.text, decoded.encoding, provenance)


def _add_image(out: Extraction, data: bytes, file_type: str, limit: int) -> None:
    """The image, its metadata, and the bytes after its end: as text (at most `limit` of them; more is
    a too_large problem), and, where they are themselves an image, as image views "appended1", ...
    (each with its metadata) that OCR and vision judge like the file's own; an end that cannot be found
    is a problem too."""
    out.views.append(ImageView("image", data, file_type, {"source": "file"}))
    _add_metadata(out, data, file_type, "metadata")
    end = _end(out, data, file_type)
    if end is None:
        return
    trailing = trailing_view(data, end, limit)
    if trailing is None:
        return
    out.views.append(trailing.view)
    if trailing.read < trailing.size:
        out.problems.append(
            Problem(
                Reason.TOO_LARGE,
                f"{trailing.size} bytes after the end of the {file_type} image, only the first"
                f" max_trailing_bytes={limit} read",
                "trailing data",
            )
        )
    _add_appended(out, data, end)


def _add_appended(out: Extraction, data: bytes, offset: int) -> None:
    """Image views of the images appended one after another from `offset`, at most MAX_APPENDED."""
    for index in range(1, MAX_APPENDED + 2):
        inner = appended_image(data, offset)
        if inner is None:
            return
        name = f"appended{index}"
        if index > MAX_APPENDED:
            detail = (
                f"more than {MAX_APPENDED} images appended after the image's end,"
                f" only {MAX_APPENDED} read (MAX_APPENDED)"
            )
            out.problems.append(Problem(Reason.TOO_LARGE, detail, "appended images"))
            return
        rest = data[offset:]
        end = _end(out, rest, inner, name)
        image = rest if end is None else rest[:end]
        provenance = {"source": "file", "part": "appended", "offset": offset, "bytes": len(image)}
        out.views.append(ImageView(name, image, inner, provenance))
        _add_metadata(out, image, inner, f"metadata:{name}")
        if end is None or end >= len(rest):
            return
        offset += end


def appended_image(data: bytes, offset: int) -> str | None:
    """The format of the image that starts at `offset` (sniffed like a file), or None."""
    found = sniff(data[offset:]) if offset < len(data) else None
    if found is None or found.kind != "image":
        return None  # "BM" opens many a text: only a consistent BMP header makes it an image
    return found.name


def _end(out: Extraction, data: bytes, file_type: str, what: str = "image") -> int | None:
    """Where the image in `data` ends (None: TIFF, no end; or a problem, then also None)."""
    try:
        end = image_end(data, file_type)
    except EndNotFound as exc:
        reason = Reason.TOO_LARGE if exc.too_large else Reason.DECODE_ERROR
        out.problems.append(Problem(reason, exc.detail, f"{what} end"))
        return None
    return end


def _add_metadata(out: Extraction, data: bytes, file_type: str, name: str) -> None:
    found = metadata_view(data, file_type, name=name)
    if found.view is not None:
        out.views.append(found.view)
    out.problems.extend(found.problems)
