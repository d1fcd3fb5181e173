"""Extract views from a snapshot: the primary view by sniffed type, then plugin extractors' views."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dropwarden.intake import Snapshot
from dropwarden.registry import Extractor
from dropwarden.sniff import FileType, sniff
from dropwarden.textdecode import DecodeError, decode_text
from dropwarden.verdict import Problem, Reason
from dropwarden.views import ImageView, TextView, View

if TYPE_CHECKING:
    from dropwarden.detect import DetectorRunner


@dataclass
class Extraction:
    file_type: FileType
    views: list[View] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def extract_views(snapshot: Snapshot, extractors: Iterable[Extractor], runner: DetectorRunner) -> Extraction:
    """The file's own view (decoded text or the image), then each extractor's views.

    Extractors run through `runner`: in a worker thread, bounded by its timeout, unless the extractor
    sets `bounded = True`. Failures and timeouts become problems (the file is then never "clean"), as
    detectors' do.
    """
    file_type = sniff(snapshot.data)
    out = Extraction(file_type)
    if file_type.kind == "text":
        try:
            decoded = decode_text(snapshot.data)
        except DecodeError as exc:
            out.problems.append(Problem(Reason.DECODE_ERROR, str(exc), "text"))
        else:
            provenance = {"source": "file"}
            if decoded.utf8 is not None:
                out.views.append(TextView.from_utf8("text", decoded.text, decoded.utf8, provenance))
            else:
                out.views.append(TextView("text", decoded.text, decoded.encoding, provenance))
    elif file_type.kind == "image":
        out.views.append(ImageView("image", snapshot.data, file_type.name, {"source": "file"}))
    for extractor in extractors:
        kinds = getattr(extractor, "view_kinds", None)
        if kinds is not None and not any(view.kind in kinds for view in out.views):
            continue  # nothing for it here: no thread hand-off for, say, OCR on a text file
        source = f"extractor {extractor.id}"
        try:
            inline = getattr(extractor, "bounded", False)
            out.views.extend(runner.call(extractor.extract, snapshot, list(out.views), inline=inline))
        except TimeoutError:
            out.problems.append(runner.timed_out(source))
        except Exception as exc:
            out.problems.append(_problem(exc, source))
    return out


def _problem(exc: Exception, source: str) -> Problem:
    """An extractor's failure as a Problem: an exception with a `reason` attribute naming a Reason
    ("timeout", "too_large", ...) keeps it; anything else is a detector_error."""
    try:
        reason = Reason(getattr(exc, "reason", None))
    except ValueError:
        return Problem(Reason.DETECTOR_ERROR, f"{type(exc).__name__}: {exc}", source)
    return Problem(reason, str(exc), source)
