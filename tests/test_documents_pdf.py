"""PDFs generated at test time, judged end to end by `dropwarden scan`: text per page, encryption, limits."""

from __future__ import annotations

import io
from pathlib import Path

import pypdfium2 as pdfium
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

from .test_documents_archives import scan

pdfmetrics.registerFont(UnicodeCIDFont("HeiseiMin-W3"))
CARD = "4111 1111 1111 1111"
CLEAN_NOTE = "会議メモ: 注文番号 20231104-7781 は火曜日に出荷します。\n".encode()


def make_pdf(path: Path, pages: list[str], encrypt: str | None = None) -> Path:
    pdf = canvas.Canvas(str(path), encrypt=encrypt)
    for text in pages:
        pdf.setFont("HeiseiMin-W3", 12)
        pdf.drawString(72, 700, text)
        pdf.showPage()
    pdf.save()
    return path


def test_japanese_pii_on_page_one_and_a_card_on_page_two_are_found_with_their_pages(tmp_path, write_config):
    path = make_pdf(
        tmp_path / "report.txt", ["山田様 マイナンバー: 1234 5678 9018", "card 4111 1111 1111 1111"]
    )
    record = scan(write_config(), path)["report.txt"]  # a PDF named .txt: typed by its bytes
    assert record["verdict"] == "finding", record
    places = {f["type"]: f["location"]["within"] for f in record["findings"]}
    assert places["JP_MY_NUMBER"] == ["page 1"] and places["CREDIT_CARD"] == ["page 2"]


def test_a_clean_pdf_with_look_alike_numbers_stays_clean(tmp_path, write_config):
    path = make_pdf(tmp_path / "clean.pdf", ["会議メモ: 注文番号 20231104-7781 は火曜日に出荷します。"])
    assert scan(write_config(), path)["clean.pdf"]["verdict"] == "clean"


def test_an_encrypted_pdf_is_unscanned_encrypted(tmp_path, write_config):
    path = make_pdf(tmp_path / "locked.pdf", ["card 4111 1111 1111 1111"], encrypt="s3cret")
    record = scan(write_config(), path)["locked.pdf"]
    assert record["verdict"] == "unscanned" and "encrypted" in record["reason"], record


def test_pages_past_max_pages_leave_the_pdf_unscanned_naming_the_limit(tmp_path, write_config):
    path = make_pdf(tmp_path / "long.pdf", [f"page {n} of a long and harmless report" for n in range(30)])
    config = write_config("[documents]\nmax_pages = 10\n")
    record = scan(config, path)["long.pdf"]
    assert record["verdict"] == "unscanned" and "documents.max_pages=10" in record["reason"], record


def make_form_pdf(path: Path) -> Path:
    """A one-page application form: a card number in an AcroForm text field, an e-mail address in a
    text annotation (neither is in the page's text layer)."""
    pdf = canvas.Canvas(str(path))
    pdf.setFont("HeiseiMin-W3", 12)
    pdf.drawString(72, 750, "申込書 Application form: please fill in every field")
    pdf.acroForm.textfield(name="payment", value=CARD, x=72, y=600, width=300, height=20)
    pdf.textAnnotation("連絡先 taro.yamada@example.co.jp", Rect=(72, 500, 200, 520))
    pdf.showPage()
    pdf.save()
    return path


def with_attachment(pdf_bytes: bytes, name: str, data: bytes) -> bytes:
    """The PDF with a file embedded in its EmbeddedFiles name tree (written by pdfium)."""
    document = pdfium.PdfDocument(pdf_bytes)
    document.new_attachment(name).set_data(data)
    out = io.BytesIO()
    document.save(out)
    document.close()
    return out.getvalue()


def test_a_card_in_a_form_field_and_an_email_in_an_annotation_are_found_there(tmp_path, write_config):
    path = make_form_pdf(tmp_path / "form.pdf")
    record = scan(write_config(), path)["form.pdf"]
    assert record["verdict"] == "finding", record
    places = {f["type"]: f["location"]["within"] for f in record["findings"]}
    assert places["CREDIT_CARD"] == ["page 1", "form field payment"], places
    assert places["EMAIL"] == ["page 1", "annotation"], places


def test_a_card_in_an_embedded_file_is_found_and_named_by_the_attachment(tmp_path, write_config):
    plain = make_pdf(tmp_path / "plain.pdf", ["会議メモ: 添付ファイルを参照してください。"]).read_bytes()
    path = tmp_path / "with_attachment.pdf"
    path.write_bytes(with_attachment(plain, "payment.txt", f"card {CARD}\n".encode()))
    record = scan(write_config(), path)["with_attachment.pdf"]
    assert record["verdict"] == "finding", record
    assert [f["location"]["within"] for f in record["findings"]] == [["attachment payment.txt"]]


def test_a_pdf_embedded_in_a_pdf_is_walked_to_its_form_field(tmp_path, write_config):
    inner = make_form_pdf(tmp_path / "inner.pdf").read_bytes()
    plain = make_pdf(tmp_path / "plain.pdf", ["Cover letter, nothing sensitive here."]).read_bytes()
    path = tmp_path / "outer.pdf"
    path.write_bytes(with_attachment(plain, "inner.pdf", inner))
    record = scan(write_config(), path)["outer.pdf"]
    places = [f["location"]["within"] for f in record["findings"]]
    assert ["attachment inner.pdf", "page 1", "form field payment"] in places, record


def test_clean_form_fields_annotations_and_attachments_stay_clean(tmp_path, write_config):
    pdf = canvas.Canvas(str(tmp_path / "clean_form.pdf"))
    pdf.drawString(72, 750, "Order form for the office party, nothing sensitive")
    pdf.acroForm.textfield(name="order", value="20231104-7781", x=72, y=600, width=300, height=20)
    pdf.textAnnotation("火曜日に出荷します", Rect=(72, 500, 200, 520))
    pdf.showPage()
    pdf.save()
    path = tmp_path / "clean.pdf"
    path.write_bytes(with_attachment((tmp_path / "clean_form.pdf").read_bytes(), "memo.txt", CLEAN_NOTE))
    assert scan(write_config(), path)["clean.pdf"]["verdict"] == "clean"


def test_an_embedded_file_past_max_member_bytes_leaves_the_pdf_unscanned_naming_the_limit(
    tmp_path, write_config
):
    plain = make_pdf(tmp_path / "plain.pdf", ["A harmless cover page with an attachment"]).read_bytes()
    path = tmp_path / "big_attachment.pdf"
    path.write_bytes(with_attachment(plain, "big.bin", b"\0" * 300_000))
    record = scan(write_config('[documents]\nmax_member_bytes = "100KiB"\n'), path)["big_attachment.pdf"]
    assert record["verdict"] == "unscanned" and "documents.max_member_bytes" in record["reason"], record
