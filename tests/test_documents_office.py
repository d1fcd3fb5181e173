"""Office Open XML files generated at test time (python-docx, openpyxl, python-pptx), judged end to end by
`dropwarden scan`: every place text hides in a document is read, and each finding names where it is."""

from __future__ import annotations

import io
import zipfile

import docx
import openpyxl
import pptx
from docx.oxml import parse_xml
from PIL import Image

from dropwarden.views import ANCHOR_STEPS
from dropwarden_documents.formats import walk
from dropwarden_documents.settings import DocumentsSettings

from .test_documents_archives import CARD, CLEAN, scan, within, zip_of

W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
V = 'xmlns:v="urn:schemas-microsoft-com:vml"'
MY_NUMBER = "マイナンバー: 1234 5678 9018"


def saved(document) -> bytes:
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def with_part(package: bytes, name: str, data: bytes | str) -> bytes:
    """`package` with one more part (a footnotes part, an embedded file)."""
    out = io.BytesIO(package)
    with zipfile.ZipFile(out, "a") as archive:
        archive.writestr(name, data)
    return out.getvalue()


def word(body: str = "本日の議事録です。", **places: str) -> bytes:
    """A docx with `body`, and text put in one of: header, footer, comment, deletion, insertion, textbox,
    table, footnote."""
    document = docx.Document()
    paragraph = document.add_paragraph(body)
    if "header" in places:
        document.sections[0].header.paragraphs[0].text = places["header"]
    if "footer" in places:
        document.sections[0].footer.paragraphs[0].text = places["footer"]
    if "comment" in places:
        document.add_comment(paragraph.runs[0], text=places["comment"], author="reviewer")
    if "table" in places:
        table = document.add_table(rows=2, cols=2)
        table.cell(1, 1).text = places["table"]
    if "deletion" in places:
        paragraph._p.append(
            parse_xml(
                f'<w:del {W} w:id="7" w:author="r"><w:r><w:delText>{places["deletion"]}</w:delText></w:r></w:del>'
            )
        )
    if "insertion" in places:
        paragraph._p.append(
            parse_xml(f'<w:ins {W} w:id="8" w:author="r"><w:r><w:t>{places["insertion"]}</w:t></w:r></w:ins>')
        )
    if "textbox" in places:
        paragraph._p.append(
            parse_xml(
                f"<w:r {W} {V}><w:pict><v:shape><v:textbox><w:txbxContent><w:p><w:r>"
                f"<w:t>{places['textbox']}</w:t></w:r></w:p></w:txbxContent></v:textbox></v:shape></w:pict></w:r>"
            )
        )
    data = saved(document)
    if "footnote" in places:
        footnotes = (
            f'<w:footnotes {W}><w:footnote w:id="1"><w:p><w:r><w:t>{places["footnote"]}</w:t></w:r></w:p>'
            "</w:footnote></w:footnotes>"
        )
        data = with_part(data, "word/footnotes.xml", footnotes)
    return data


def test_pii_in_every_place_of_a_word_document_is_found_and_named_by_its_part(tmp_path, write_config):
    places = {
        "header": "word/header1.xml",
        "footer": "word/footer1.xml",
        "comment": "word/comments.xml",
        "footnote": "word/footnotes.xml",
        "table": "word/document.xml",
        "deletion": "word/document.xml",
        "insertion": "word/document.xml",
        "textbox": "word/document.xml",
    }
    for place in places:
        (tmp_path / f"{place}.docx").write_bytes(word(**{place: f"担当 {CARD}"}))
    records = scan(write_config(), *(tmp_path / f"{place}.docx" for place in places))
    for place, part in places.items():
        record = records[f"{place}.docx"]
        assert record["verdict"] == "finding", (place, record)
        assert [part] in within(record), (place, within(record))


def test_a_card_stored_as_a_number_reads_with_all_its_digits_and_names_its_sheet_and_cell(
    tmp_path, write_config
):
    book = openpyxl.Workbook()
    book.active.title = "顧客"
    book.active["A1"] = "カード"
    book.active["B2"] = 4111111111111111  # an int: never "4.11E+15"
    hidden = book.create_sheet("Archive")
    hidden.sheet_state = "hidden"
    hidden["C3"] = f"山田太郎 {MY_NUMBER}"
    (tmp_path / "book.xlsx").write_bytes(saved(book))
    record = scan(write_config(), tmp_path / "book.xlsx")["book.xlsx"]
    places = {f["type"]: f["location"]["within"] for f in record["findings"]}
    assert places["CREDIT_CARD"] == ["sheet 顧客", "cell B2"], record
    assert places["JP_MY_NUMBER"] == ["sheet Archive (hidden)", "cell C3"], record


def minimal_xlsx(cells: str) -> bytes:
    """An xlsx written by hand: one sheet of `cells` XML (inline strings, numbers in E notation)."""
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rels = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    package = "http://schemas.openxmlformats.org/package/2006/relationships"
    return zip_of(
        {
            "[Content_Types].xml": '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument'
            '.spreadsheetml.sheet.main+xml"/></Types>',
            "_rels/.rels": f'<Relationships xmlns="{package}"><Relationship Id="r1" Target="xl/workbook.xml"'
            ' Type="x/officeDocument"/></Relationships>',
            "xl/workbook.xml": f'<workbook xmlns="{main}" xmlns:r="{rels}"><sheets>'
            '<sheet name="Data" sheetId="1" r:id="rId1"/></sheets></workbook>',
            "xl/_rels/workbook.xml.rels": f'<Relationships xmlns="{package}"><Relationship Id="rId1"'
            ' Target="worksheets/sheet1.xml" Type="x/worksheet"/></Relationships>',
            "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{main}"><sheetData>{cells}</sheetData></worksheet>',
        }
    )


def test_inline_strings_and_numbers_in_e_notation_are_read_as_written_by_hand(tmp_path, write_config):
    (tmp_path / "inline.xlsx").write_bytes(
        minimal_xlsx(f'<row r="4"><c r="D4" t="inlineStr"><is><t>{MY_NUMBER}</t></is></c></row>')
    )
    (tmp_path / "enote.xlsx").write_bytes(
        minimal_xlsx('<row r="1"><c r="A1"><v>4.111111111111111E+15</v></c></row>')
    )
    records = scan(write_config(), tmp_path / "inline.xlsx", tmp_path / "enote.xlsx")
    assert ["sheet Data", "cell D4"] in within(records["inline.xlsx"]), records["inline.xlsx"]
    assert ["sheet Data", "cell A1"] in within(records["enote.xlsx"]), records["enote.xlsx"]


def test_slides_and_speaker_notes_are_read_with_their_slide_numbers(tmp_path, write_config):
    deck = pptx.Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = f"顧客 {MY_NUMBER}"
    second = deck.slides.add_slide(deck.slide_layouts[1])
    second.shapes.title.text = "四半期の報告"
    second.notes_slide.notes_text_frame.text = f"話すこと: {CARD}"
    (tmp_path / "deck.pptx").write_bytes(saved(deck))
    record = scan(write_config(), tmp_path / "deck.pptx")["deck.pptx"]
    places = {f["type"]: f["location"]["within"] for f in record["findings"]}
    assert places == {"JP_MY_NUMBER": ["slide 1"], "CREDIT_CARD": ["slide 2", "notes"]}, record


def test_a_deck_is_one_view_whose_ranges_name_each_slide_its_notes_and_every_other_part():
    """Slides, speaker notes, layouts and masters go to the judge as one text view (a detection pass
    per part cost more than reading them); each part's text lies in a range anchored with where it is."""
    deck = pptx.Presentation()
    deck.slides.add_slide(deck.slide_layouts[1]).shapes.title.text = "最初の話題"
    second = deck.slides.add_slide(deck.slide_layouts[1])
    second.shapes.title.text = "次の話題"
    second.notes_slide.notes_text_frame.text = "話すこと"
    outcome = walk(saved(deck), DocumentsSettings())
    texts = [view for view in outcome.views if view[0] == "text"]
    assert len(texts) == 1 and texts[0][3]["within"] == [], texts
    _, _, text, provenance = texts[0]
    ranges = {
        tuple(label.split(ANCHOR_STEPS)): text[start:end] for start, end, label in provenance["anchors"]
    }
    assert "最初の話題" in ranges[("slide 1",)] and "次の話題" in ranges[("slide 2",)], ranges
    assert ranges[("slide 2", "notes")].strip() == "話すこと", ranges
    assert any(label[0].startswith("ppt/slideLayouts/") for label in ranges), ranges


def test_parts_read_before_the_text_budget_ran_out_are_still_judged():
    """The package's view is made whatever ends its walk: a card on slide 1 stands when slide 2 spends
    documents.max_text_chars."""
    deck = pptx.Presentation()
    deck.slides.add_slide(deck.slide_layouts[1]).shapes.title.text = f"card {CARD}"
    deck.slides.add_slide(deck.slide_layouts[1]).shapes.title.text = "x" * 5000
    outcome = walk(saved(deck), DocumentsSettings(max_text_chars=4000))
    assert any("max_text_chars" in detail for _, detail, _ in outcome.problems), outcome.problems
    assert [view[2] for view in outcome.views if view[0] == "text" and CARD in view[2]], outcome.views


def test_embedded_packages_are_recursed_and_an_office_file_named_dat_is_typed_by_its_content(
    tmp_path, write_config
):
    inner_book = openpyxl.Workbook()
    inner_book.active["A1"] = CARD
    deck = pptx.Presentation()
    deck.slides.add_slide(deck.slide_layouts[1]).shapes.title.text = "埋め込み"
    (tmp_path / "deck.pptx").write_bytes(
        with_part(saved(deck), "ppt/embeddings/Book1.xlsx", saved(inner_book))
    )
    inner_doc = word(header=f"内側 {MY_NUMBER}")
    (tmp_path / "outer.docx").write_bytes(with_part(word(), "word/embeddings/inner.docx", inner_doc))
    (tmp_path / "report.dat").write_bytes(word(comment=CARD))
    records = scan(write_config(), tmp_path / "deck.pptx", tmp_path / "outer.docx", tmp_path / "report.dat")
    assert ["ppt/embeddings/Book1.xlsx", "sheet Sheet", "cell A1"] in within(records["deck.pptx"])
    assert ["word/embeddings/inner.docx", "word/header1.xml"] in within(records["outer.docx"])
    assert ["word/comments.xml"] in within(records["report.dat"]), records["report.dat"]


def test_embedded_pictures_become_image_views_for_ocr():
    picture = io.BytesIO()
    Image.new("RGB", (40, 20), "white").save(picture, "PNG")
    picture.seek(0)
    document = docx.Document()
    document.add_picture(picture)
    outcome = walk(saved(document), DocumentsSettings())
    images = [view for view in outcome.views if view[0] == "image"]
    assert any(view[-1]["within"] == ["word/media/image1.png"] and view[3] == "png" for view in images), (
        images
    )
    assert outcome.problems == []


def test_the_preview_thumbnail_is_not_read_again_once_the_document_itself_was():
    """docProps/thumbnail.* is a picture of the first page, whose text and media are read as such:
    never a second OCR of it; a package without a readable main part keeps it as an image view."""
    thumbnail = io.BytesIO()
    Image.new("RGB", (40, 20), "white").save(thumbnail, "JPEG")
    for package in (saved(docx.Document()), saved(pptx.Presentation())):
        if "docProps/thumbnail.jpeg" not in zipfile.ZipFile(io.BytesIO(package)).namelist():
            package = with_part(package, "docProps/thumbnail.jpeg", thumbnail.getvalue())
        views = [view[-1]["within"] for view in walk(package, DocumentsSettings()).views]
        assert ["docProps/thumbnail.jpeg"] not in views and views, views
    bare = zip_of({"[Content_Types].xml": b"<Types/>", "_rels/.rels": b"<Relationships/>"})
    views = walk(with_part(bare, "docProps/thumbnail.jpeg", thumbnail.getvalue()), DocumentsSettings()).views
    assert [view[-1]["within"] for view in views if view[0] == "image"] == [["docProps/thumbnail.jpeg"]]


def test_clean_office_files_with_look_alike_numbers_stay_clean(tmp_path, write_config):
    (tmp_path / "clean.docx").write_bytes(
        word(CLEAN, header="版 2023-11-04", comment="注文番号 20231104-7781")
    )
    book = openpyxl.Workbook()
    book.active["A1"] = 20231104778  # an order number, no card
    book.active["B1"] = 3.14159
    book.active["C1"] = CLEAN
    (tmp_path / "clean.xlsx").write_bytes(saved(book))
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "会議メモ"
    slide.notes_slide.notes_text_frame.text = CLEAN
    (tmp_path / "clean.pptx").write_bytes(saved(deck))
    records = scan(write_config(), *(tmp_path / name for name in ("clean.docx", "clean.xlsx", "clean.pptx")))
    assert {name: r["verdict"] for name, r in records.items()} == dict.fromkeys(records, "clean"), records


def test_a_damaged_part_leaves_a_clean_file_unscanned_and_findings_elsewhere_stand(tmp_path, write_config):
    broken = "<w:footnotes><broken"
    (tmp_path / "damaged.docx").write_bytes(with_part(word(comment=CARD), "word/footnotes.xml", broken))
    (tmp_path / "damaged-clean.docx").write_bytes(with_part(word(CLEAN), "word/footnotes.xml", broken))
    records = scan(write_config(), tmp_path / "damaged.docx", tmp_path / "damaged-clean.docx")
    assert records["damaged.docx"]["verdict"] == "finding", records["damaged.docx"]
    assert ["word/comments.xml"] in within(records["damaged.docx"])
    clean = records["damaged-clean.docx"]
    assert clean["verdict"] == "unscanned" and "word/footnotes.xml" in clean["reason"], clean


def test_a_part_with_an_entity_bomb_or_external_entity_is_refused_not_expanded(tmp_path, write_config):
    laughs = '<!DOCTYPE w [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">' + "".join(
        f'<!ENTITY {chr(99 + i)} "{("&" + chr(98 + i) + ";") * 10}">' for i in range(7)
    )
    bomb = f"{laughs}]><w:footnotes {W}><w:footnote><w:p><w:r><w:t>&j;</w:t></w:r></w:p></w:footnote></w:footnotes>"
    external = f'<!DOCTYPE w [<!ENTITY x SYSTEM "file:///etc/hostname">]><w:comments {W}>&x;</w:comments>'
    (tmp_path / "bomb.docx").write_bytes(with_part(word(CLEAN), "word/footnotes.xml", bomb))
    (tmp_path / "xxe.docx").write_bytes(with_part(word(CLEAN), "word/comments.xml", external))
    records = scan(write_config(), tmp_path / "bomb.docx", tmp_path / "xxe.docx")
    for name, part in (("bomb.docx", "word/footnotes.xml"), ("xxe.docx", "word/comments.xml")):
        record = records[name]
        assert record["verdict"] == "unscanned" and part in record["reason"], record
        assert "DTDForbidden" in record["reason"], record
