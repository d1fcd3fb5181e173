"""Which handler takes a file apart, by its sniffed format (magic bytes and structure, never the name)."""

from __future__ import annotations

import re
import zipfile
from io import BytesIO

from dropwarden.sniff import sniff
from dropwarden_documents import archives
from dropwarden_documents.walk import Handler

# A mail file: header lines first (RFC 5322), among them one that every message has.
_MAIL_HEAD = re.compile(rb"\A(?:[!-9;-~]+:[^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*){2,}")
_MAIL_FIELDS = re.compile(rb"^(?:from|to|subject|date|message-id|received|mime-version):", re.I | re.M)


def handler_for(data: bytes, name: str = "") -> Handler | None:
    """The handler of `data`'s format, or None for a leaf (text, image, unknown binary)."""
    found = sniff(data).name
    if found == "zip":
        return _zip_kind(data)
    if found == "pdf":
        from dropwarden_documents import pdf

        return pdf.walk_pdf
    if found in ("gzip", "bzip2", "xz"):
        return archives.walk_compressed
    if found == "tar":
        return archives.walk_tar
    if found == "text" and is_mail(data):
        from dropwarden_documents import mail

        return mail.walk_mail
    return None


def is_mail(data: bytes) -> bool:
    head = data[:16384]
    match = _MAIL_HEAD.match(head)
    return match is not None and len(_MAIL_FIELDS.findall(match.group())) >= 2


def _zip_kind(data: bytes) -> Handler:
    """An Office Open XML package is a zip with [Content_Types].xml and its main part."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as package:
            names = set(package.namelist()[:100_000])
    except (zipfile.BadZipFile, ValueError, OSError):
        return archives.walk_zip
    if "[Content_Types].xml" in names and names & {
        "word/document.xml",
        "xl/workbook.xml",
        "ppt/presentation.xml",
    }:
        from dropwarden_documents import ooxml

        return ooxml.walk_ooxml
    return archives.walk_zip
