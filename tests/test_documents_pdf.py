"""PDFs generated at test time, judged end to end by `dropwarden scan`: text per page, encryption, limits."""

from __future__ import annotations

from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

from .test_documents_archives import scan

pdfmetrics.registerFont(UnicodeCIDFont("HeiseiMin-W3"))


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
