"""Extract views from a snapshot: the primary view by sniffed type, then plugin extractors' views."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dropwarden.intake import Snapshot
from dropwarden.registry import Extractor
from dropwarden.sniff import FileType, sniff
from dropwarden.textdecode import DecodeError, decode_text
from dropwarden.verdict import Problem, Reason
from dropwarden.views import ImageView, TextView, View


@dataclass
class Extraction:
    file_type: FileType
    views: list[View] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def extract_views(snapshot: Snapshot, extractors: Iterable[Extractor]) -> Extraction:
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
        try:
            out.views.extend(extractor.extract(snapshot, list(out.views)))
        except Exception as exc:
            out.problems.append(
                Problem(Reason.DETECTOR_ERROR, f"{type(exc).__name__}: {exc}", f"extractor {extractor.id}")
            )
    return out
