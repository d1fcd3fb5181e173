"""Extract views from a snapshot: the primary view by sniffed type, then plugin extractors' views."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dropwarden.judge.framing import EndNotFound, image_end
from dropwarden.judge.intake import Snapshot
from dropwarden.judge.metadata import metadata_view
from dropwarden.judge.sniff import FileType, sniff, utf16_without_bom
from dropwarden.judge.textdecode import DecodeError, decode_text
from dropwarden.judge.trailing import trailing_view
from dropwarden.registry import Extractor, Incomplete
from dropwarden.verdict import Problem, Reason
from dropwarden.views import ImageView, TextView, View

# Images appended one after another after the file's image, each judged as an image; more: too_large.
MAX_APPENDED = 4
_BMP_HEADERS = frozenset({12, 40, 52, 56, 64, 108, 124})

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
        own = [view for view in self.views if view.provenance.get("source") == "file"]
        derived = {view.provenance.get("derived_from") for view in self.views if view.name in judged}
        if own:
            missing = [view.name for view in own if view.name not in judged and view.name not in derived]
        else:
            missing = [] if judged & {view.name for view in self.views} else [self.file_type.name]
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
    as text, and any image appended there as an image), then each extractor's views.

    Extractors run through `runner`: in a worker thread, bounded by its timeout, unless the extractor
    sets `bounded = True`. Failures and timeouts become problems (the file is then never "clean"), as
    detectors' do; an extractor raising `Incomplete` keeps the views it made.
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
    for extractor in extractors:
        kinds = getattr(extractor, "view_kinds", None)
        if kinds is not None and not any(view.kind in kinds for view in out.views):
            continue  # nothing for it here: no thread hand-off for, say, OCR on a text file
        source = f"extractor {extractor.id}"
        try:
            inline = getattr(extractor, "bounded", False)
            out.views.extend(runner.call(extractor.extract, snapshot, list(out.views), inline=inline))
        except Incomplete as exc:  # what it read stands, with the problem
            out.views.extend(exc.results)
            out.problems.append(Problem.from_exception(exc, source))
        except TimeoutError:
            out.problems.append(runner.timed_out(source))
        except Exception as exc:
            out.problems.append(Problem.from_exception(exc, source))
    return out


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
    head = data[offset : offset + 64]
    found = sniff(head) if head else None
    if found is None or found.kind != "image":
        return None
    if found.name == "bmp" and int.from_bytes(head[14:18], "little") not in _BMP_HEADERS:
        return None  # "BM" opens many a text: only a real BMP info header makes it an image
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
