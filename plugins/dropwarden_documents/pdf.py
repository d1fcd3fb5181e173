"""PDF with pypdfium2: text per page, a page without a text layer rendered for OCR, encryption refused."""

from __future__ import annotations

import io

import pypdfium2 as pdfium

from dropwarden_documents.walk import Encrypted, Walker, Within

_MIN_TEXT = 8  # characters below which a page is taken to have no usable text layer


def walk_pdf(walker: Walker, data: bytes, within: Within, depth: int) -> None:
    """Each page's text (view per page, `within` ... "page N"); a page with no usable text is rendered
    (at most documents.max_rendered_pages) as an image view for OCR; past documents.max_pages: too_large."""
    limits = walker.limits
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise Encrypted("PDF encrypted without a password") from None
        raise
    try:
        count = len(document)
        for index in range(min(count, limits.max_pages)):
            page = document[index]
            try:
                textpage = page.get_textpage()
                text = textpage.get_text_range()
                textpage.close()
                where = (*within, f"page {index + 1}")
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
            finally:
                page.close()
        if count > limits.max_pages:
            walker.problem(
                "too_large", f"{count} pages, only documents.max_pages={limits.max_pages} read", within
            )
    finally:
        document.close()
