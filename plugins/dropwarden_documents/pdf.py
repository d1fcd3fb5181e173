"""PDF with pypdfium2: text per page, form fields and annotations, embedded files recursed, a page without
a text layer rendered for OCR, encryption refused."""

from __future__ import annotations

import ctypes
import io
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from dropwarden_documents.walk import Encrypted, LimitReached, Walker, Within, mask_member

_MIN_TEXT = 8  # characters below which a page is taken to have no usable text layer
_WIDGET = pdfium_c.FPDF_ANNOT_WIDGET
_FILE_ATTACHMENT = pdfium_c.FPDF_ANNOT_FILEATTACHMENT
_POPUP = pdfium_c.FPDF_ANNOT_POPUP  # repeats its parent's contents


def walk_pdf(walker: Walker, data: bytes, within: Within, depth: int) -> None:
    """Each page's text (view per page, `within` ... "page N"); its form field values and annotation
    text (one view per page, ranges labelled "form field NAME" / "annotation"); a page with no usable
    text is rendered (at most documents.max_rendered_pages) as an image view for OCR; past
    documents.max_pages: too_large. Embedded files (the document's and file-attachment annotations')
    are walked like members ("attachment NAME")."""
    limits = walker.limits
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise Encrypted("PDF encrypted without a password") from None
        raise
    try:
        forms = _form_handle(document)
        count = len(document)
        for index in range(min(count, limits.max_pages)):
            page = document[index]
            try:
                where = (*within, f"page {index + 1}")
                textpage = page.get_textpage()
                text = textpage.get_text_range()
                textpage.close()
                if len(text.strip()) >= _MIN_TEXT:
                    walker.text(text, where)
                elif walker.pages_rendered < limits.max_rendered_pages:
                    walker.pages_rendered += 1
                    bitmap = page.render(scale=limits.render_dpi / 72)
                    image = bitmap.to_pil()
                    out = io.BytesIO()
                    image.save(out, "PNG")
                    walker.image(out.getvalue(), "png", where)
                else:
                    walker.problem(
                        "too_large",
                        f"more than documents.max_rendered_pages={limits.max_rendered_pages}"
                        " pages without text",
                        where,
                    )
                _annotations(walker, document, page, forms, where, depth)
            finally:
                page.close()
        if count > limits.max_pages:
            walker.problem(
                "too_large", f"{count} pages, only documents.max_pages={limits.max_pages} read", within
            )
        attachments = range(document.count_attachments())
        for index in walker.members(attachments, within):
            _attachment(walker, document, document.get_attachment(index).raw, within, depth)
    finally:
        document.close()


def _form_handle(document: pdfium.PdfDocument) -> Any:
    """The form environment (before any page is loaded), or None: field values then come from /V."""
    try:
        document.init_forms()
    except pdfium.PdfiumError:
        return None
    return document.formenv.raw if document.formenv else None


def _annotations(
    walker: Walker, document: pdfium.PdfDocument, page: pdfium.PdfPage, forms: Any, where: Within, depth: int
) -> None:
    """One view of the page's form field values and annotation text, each range labelled; the files
    of file-attachment annotations walked."""
    parts: list[str] = []
    anchors: list[tuple[int, int, str]] = []
    size = 0
    for index in walker.members(range(pdfium_c.FPDFPage_GetAnnotCount(page)), where):
        annot = pdfium_c.FPDFPage_GetAnnot(page, index)
        if not annot:
            continue
        try:
            subtype = pdfium_c.FPDFAnnot_GetSubtype(annot)
            found: list[tuple[str, str]] = []
            if subtype == _WIDGET:
                name = _wide(pdfium_c.FPDFAnnot_GetFormFieldName, forms, annot) if forms else ""
                value = (
                    _wide(pdfium_c.FPDFAnnot_GetFormFieldValue, forms, annot)
                    if forms
                    else _wide(pdfium_c.FPDFAnnot_GetStringValue, annot, b"V")
                )
                found.append((value, f"form field {name[:100]}" if name else "form field"))
            if subtype != _POPUP:
                found.append((_wide(pdfium_c.FPDFAnnot_GetStringValue, annot, b"Contents"), "annotation"))
            if subtype == _FILE_ATTACHMENT:
                attached = pdfium_c.FPDFAnnot_GetFileAttachment(annot)
                if attached:
                    _attachment(walker, document, attached, where, depth)
        finally:
            pdfium_c.FPDFPage_CloseAnnot(annot)
        for text, label in found:
            if text.strip():
                anchors.append((size, size + len(text), label))
                parts.append(text)
                size += len(text) + 1
    walker.text("\n".join(parts), where, anchors)


def _attachment(walker: Walker, document: pdfium.PdfDocument, raw: Any, within: Within, depth: int) -> None:
    """An embedded file walked as a member at `within` > "attachment NAME", its size (as pdfium
    decodes it) within documents.max_member_bytes and the file's total."""
    attachment = pdfium.PdfAttachment(raw, document)
    name = attachment.get_name()[:500]
    label = (*within, f"attachment {name}" if name else "attachment")
    size = ctypes.c_ulong()
    if not pdfium_c.FPDFAttachment_GetFile(raw, None, 0, ctypes.byref(size)):
        walker.problem("decode_error", "an embedded file that cannot be read", label)
        return
    if size.value > walker.limits.max_member_bytes:
        raise LimitReached(
            f"{mask_member(name)}: more than documents.max_member_bytes={int(walker.limits.max_member_bytes)}"
        )
    walker.charge(size.value)
    walker.visit(bytes(attachment.get_data()), label, depth + 1, name)


def _wide(function: Any, *args: Any) -> str:
    """A UTF-16LE string out of a pdfium getter that takes (..., buffer, length in bytes) (its size
    bounded by the document's own: pdfium holds it whole already)."""
    size = function(*args, None, 0)
    if size <= 2:
        return ""
    buffer = (pdfium_c.FPDF_WCHAR * (size // 2))()
    function(*args, buffer, size)
    return bytes(buffer).decode("utf-16-le", "replace").split("\x00", 1)[0]
