"""The documents extractor: a PDF, Office file, mail or archive goes to a parser worker; views come back."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from dropwarden.content import sniff
from dropwarden.registry import Incomplete, without_turn
from dropwarden.views import ImageView, TextView, View
from dropwarden_documents.formats import is_mail
from dropwarden_documents.markup import is_html, is_xml
from dropwarden_documents.rtf import is_rtf
from dropwarden_documents.settings import DocumentsSettings
from dropwarden_documents.worker import DEFAULT_JOB, WorkerFailed, WorkerPool

if TYPE_CHECKING:
    from dropwarden.intake import Snapshot

VERSION = "0.4.0"  # 0.4: every part of an Office/ODF package judged (earlier verdicts on them are stale)
CONTAINERS = frozenset({"zip", "pdf", "gzip", "bzip2", "xz", "tar", "ole"})


def is_document(data: bytes, views: list[View] | None = None) -> bool:
    """Whether the file is one the workers take apart (parsed only there). What the core made of it
    first (`views`) saves typing it again: its image (a consistent header: no container) is none;
    its decoded text can only be mail, RTF, HTML or XML; anything else is sniffed here."""
    own = {view.kind for view in views or () if view.provenance.get("source") == "file"}
    if "image" in own:
        return False
    if "text" not in own and sniff(data).name in CONTAINERS:
        return True
    return is_mail(data) or is_rtf(data) or is_html(data) or is_xml(data)


def to_view(item: tuple[Any, ...]) -> View:
    if item[0] == "text":
        _, name, text, provenance = item
        return TextView(name, text, "utf-8", provenance)
    _, name, data, image_format, provenance = item
    return ImageView(name, data, image_format, provenance)


class DocumentsExtractor:
    """Called once per file (no `view_kinds`: it reads the snapshot). Its own wall-time bound
    (documents.file_timeout, in the worker) replaces the core's thread timeout: `bounded`."""

    id = "documents"
    bounded = True

    def __init__(self, limits: DocumentsSettings, job: str = DEFAULT_JOB) -> None:
        self.limits = limits
        self.pool = WorkerPool(limits, job)
        digest = hashlib.sha256(json.dumps(limits.model_dump(mode="json"), sort_keys=True).encode())
        self.version = f"{VERSION}+{digest.hexdigest()[:10]}"

    def settings_digest(self) -> Any:
        return self.limits.model_dump(mode="json")

    def close(self) -> None:
        self.pool.close()

    def extract(self, snapshot: Snapshot, views: list[View]) -> list[View]:
        """The views of the file's contents; any problem (a limit, a password, damage, a worker that
        crashed, hung or ran out of memory) raises Incomplete with the views made before it."""
        if not is_document(snapshot.data, views):
            return []
        try:
            with without_turn():  # the document is read in a child process: the other workers go on
                outcome = self.pool.run(snapshot.data)
        except WorkerFailed as exc:
            raise Incomplete(exc.reason, exc.detail, []) from None
        made = [to_view(item) for item in outcome.views]
        if outcome.problems:
            reason = outcome.problems[0][0]
            detail = "; ".join(f"{where}: {why} ({what})" for why, what, where in outcome.problems[:20])
            if len(outcome.problems) > 20:
                detail += f"; and {len(outcome.problems) - 20} more"
            raise Incomplete(reason, detail, made)
        return made
