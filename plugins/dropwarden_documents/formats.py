"""Which handler takes a file apart, by its sniffed format (magic bytes and structure, never the name)."""

from __future__ import annotations

import io
import re
import zipfile
from functools import partial

from dropwarden.content import sniff
from dropwarden_documents.archives import walk_compressed, walk_tar, walk_zip
from dropwarden_documents.mail import walk_mail
from dropwarden_documents.markup import is_html, is_xml, walk_html, walk_xml
from dropwarden_documents.odf import is_odf, walk_odf
from dropwarden_documents.ole import walk_ole
from dropwarden_documents.ooxml import is_ooxml, walk_ooxml
from dropwarden_documents.rtf import is_rtf, walk_rtf
from dropwarden_documents.settings import DocumentsSettings
from dropwarden_documents.walk import Handler, LimitReached, Outcome, Walker

# A mail file: header lines first (RFC 5322), among them one that every message has.
_MAIL_HEAD = re.compile(rb"\A(?:[!-9;-~]+:[^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*){2,}")
_MAIL_FIELDS = re.compile(rb"^(?:from|to|subject|date|message-id|received|mime-version):", re.I | re.M)


def handler_for(data: bytes, name: str = "") -> Handler | None:
    """The handler of `data`'s format, or None for a leaf (text, image, unknown binary)."""
    found = sniff(data).name
    if found == "zip":
        return _zip_kind(data)
    if found == "pdf":
        from dropwarden_documents.pdf import walk_pdf

        return walk_pdf
    if found in ("gzip", "bzip2", "xz"):
        return walk_compressed
    if found == "tar":
        return walk_tar
    if found == "ole":
        return walk_ole
    if is_rtf(data):
        return walk_rtf
    if is_html(data):
        return walk_html
    if is_xml(data):
        return walk_xml
    if is_mail(data):
        return walk_mail
    return None


def is_mail(data: bytes) -> bool:
    head = data[:16384]
    match = _MAIL_HEAD.match(head)
    return match is not None and len(_MAIL_FIELDS.findall(match.group())) >= 2


def _zip_kind(data: bytes) -> Handler:
    """An Office Open XML package by its parts (whatever the file is called), any other zip as a zip.
    A package is walked through the archive opened here (its directory read once, not twice)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception:  # choosing must never fail: walk_zip meets the damage and reports it
        return walk_zip
    try:
        if is_ooxml(archive):
            return partial(walk_ooxml, archive=archive)
        if is_odf(archive):
            archive.close()
            return walk_odf
    except Exception:
        pass
    archive.close()
    return walk_zip


def walk(data: bytes, limits: DocumentsSettings) -> Outcome:
    """Every view of a dropped file's contents, within `limits` (the job a parser worker runs)."""
    walker = Walker(limits, handler_for)
    try:
        walker.visit(data, (), 0)
    except LimitReached as exc:
        walker.problem(exc.reason, exc.detail, ())
    return walker.out
