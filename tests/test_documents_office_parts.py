"""Parts of an Office or OpenDocument package that hold no document text (relationships, content types,
styles, themes, settings, manifests) and attribute values anywhere: generated files edited with zipfile,
judged end to end by `dropwarden scan`; every piece is judged and a finding names its part."""

from __future__ import annotations

import io
import re
import zipfile

import docx
import openpyxl
import pptx
from docx.enum.style import WD_STYLE_TYPE
from PIL import Image

from dropwarden_documents.formats import walk
from dropwarden_documents.settings import DocumentsSettings

from .test_documents_archives import CARD, CLEAN, scan, within
from .test_documents_office import MY_NUMBER, saved, word
from .test_documents_text_formats import odf

MAIL = "hanako.yamada@example.co.jp"
AWS_KEY = "AKIAQ7XK2M4PZ9TB3WRV"
RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def edited(package: bytes, name: str, edit, *, binary: bool = False) -> bytes:
    """`package` with part `name` replaced by `edit(its text)` (`binary`: of its bytes), every other part
    as it was."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(package)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            data = source.read(info)
            if info.filename == name:
                data = edit(data) if binary else edit(data.decode()).encode()
            target.writestr(info, data)
    return out.getvalue()


def before_end(tag: str, insert: str):
    """An edit that puts `insert` just before the closing `tag` of a part."""
    return lambda xml: xml.replace(f"</{tag}>", f"{insert}</{tag}>", 1)


def deck() -> bytes:
    presentation = pptx.Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = "四半期の報告"
    return saved(presentation)


def book() -> bytes:
    workbook = openpyxl.Workbook()
    workbook.active["A1"] = "会議メモ"
    return saved(workbook)


def settings_xml(extra: str = "") -> str:
    """An OpenDocument settings part as office suites write it: view and printer settings (numbers,
    booleans, a base64 printer blob)."""
    items = "".join(
        f'<config:config-item config:name="{name}" config:type="{kind}">{value}</config:config-item>'
        for name, kind, value in (
            ("ViewAreaTop", "long", "0"),
            ("ViewAreaWidth", "long", "41197"),
            ("VisibleBottom", "long", "20231104"),
            ("PrinterName", "string", "Office Printer 2F"),
            ("PrinterSetup", "base64Binary", "nAH+/09mZmljZSBQcmludGVyIDJGAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            ("IsKernAsianPunctuation", "boolean", "false"),
            ("Rsid", "int", "1457235"),
        )
    )
    return (
        '<office:document-settings xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
        ' xmlns:config="urn:oasis:names:tc:opendocument:xmlns:config:1.0"><office:settings>'
        f'<config:config-item-set config:name="ooo:configuration-settings">{items}{extra}'
        "</config:config-item-set></office:settings></office:document-settings>"
    )


def odt(settings: str) -> bytes:
    package = odf("text", f"<office:text><text:p>{CLEAN}</text:p></office:text>")
    out = io.BytesIO(package)
    with zipfile.ZipFile(out, "a") as archive:
        archive.writestr("settings.xml", settings)
    return out.getvalue()


def test_pii_and_secrets_in_structural_parts_are_found_and_named_by_their_part(tmp_path, write_config):
    styled = docx.Document()
    styled.add_paragraph(CLEAN)
    styled.styles.add_style(CARD, WD_STYLE_TYPE.PARAGRAPH)  # a style named by a card number
    theme = "xl/theme/theme1.xml"
    linked = before_end(
        "Relationships",
        f'<Relationship Id="rId99" Type="{RELS}/hyperlink" Target="https://x.example/?k={AWS_KEY}"'
        ' TargetMode="External"/>',
    )
    content_type = before_end(
        "Types", f'<Default Extension="bin" ContentType="application/x-owner; by={MAIL}"/>'
    )
    variables = f'<w:docVars><w:docVar w:name="owner" w:val="{MY_NUMBER}"/></w:docVars>'
    printer = "ppt/printerSettings/printerSettings1.bin"  # a binary: its strings
    commented = before_end("w:styles", f"<!-- {CARD} -->")  # a comment: read through expat's callbacks
    files = {
        "style.docx": (saved(styled), "word/styles.xml", "CREDIT_CARD"),
        "theme.xlsx": (
            edited(book(), theme, lambda xml: xml.replace('"Cambria"', f'"{MAIL}"')),
            theme,
            "EMAIL",
        ),
        "link.pptx": (
            edited(deck(), "ppt/slides/_rels/slide1.xml.rels", linked),
            "ppt/slides/_rels/slide1.xml.rels",
            "AWS_ACCESS_KEY",
        ),
        "types.docx": (
            edited(word(CLEAN), "[Content_Types].xml", content_type),
            "[Content_Types].xml",
            "EMAIL",
        ),
        "settings.docx": (
            edited(word(CLEAN), "word/settings.xml", before_end("w:settings", variables)),
            "word/settings.xml",
            "JP_MY_NUMBER",
        ),
        "printer.pptx": (
            edited(deck(), printer, lambda data: data + f"{MAIL}".encode("utf-16-le"), binary=True),
            printer,
            "EMAIL",
        ),
        "comment.docx": (edited(word(CLEAN), "word/styles.xml", commented), "word/styles.xml", "CREDIT_CARD"),
        "settings.odt": (
            odt(
                settings_xml(
                    f'<config:config-item config:name="Owner" config:type="string">{MAIL}</config:config-item>'
                )
            ),
            "settings.xml",
            "EMAIL",
        ),
        "manifest.odt": (
            edited(
                odt(settings_xml()),
                "META-INF/manifest.xml",
                before_end("manifest:manifest", f'<manifest:file-entry manifest:full-path="{CARD}"/>'),
            ),
            "META-INF/manifest.xml",
            "CREDIT_CARD",
        ),
    }
    for name, (data, _, _) in files.items():
        (tmp_path / name).write_bytes(data)
    records = scan(write_config(), *(tmp_path / name for name in files))
    for name, (_, part, kind) in files.items():
        record = records[name]
        assert record["verdict"] == "finding", (name, record)
        places = {(f["type"], tuple(f["location"].get("within") or ())) for f in record["findings"]}
        assert places == {(kind, (part, "strings") if part == printer else (part,))}, (
            name,
            record["findings"],
        )


def test_attribute_values_of_parts_whose_text_is_read_are_judged(tmp_path, write_config):
    picture = io.BytesIO()
    Image.new("RGB", (40, 20), "white").save(picture, "PNG")
    picture.seek(0)
    document = docx.Document()
    document.add_paragraph(CLEAN)
    document.add_picture(picture)
    document.inline_shapes[0]._inline.docPr.set("descr", f"連絡先 {MAIL}")  # a picture's alt text
    (tmp_path / "alt.docx").write_bytes(saved(document))
    properties = before_end(
        "Properties",
        '<property fmtid="{D5CDD505-2E9C-101B-9397-08002B2CF9AE}" pid="2" name="' + CARD + '">'
        f'<vt:lpwstr xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes">{MAIL}'
        "</vt:lpwstr></property>",  # a property's name (an attribute) and its value (character data)
    )
    custom = '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/custom-properties"></Properties>'
    package = io.BytesIO(word(CLEAN))
    with zipfile.ZipFile(package, "a") as archive:
        archive.writestr("docProps/custom.xml", properties(custom))
    (tmp_path / "custom.docx").write_bytes(package.getvalue())
    records = scan(write_config(), tmp_path / "alt.docx", tmp_path / "custom.docx")
    assert within(records["alt.docx"]) == [["word/document.xml"]], records["alt.docx"]
    places = {(f["type"], *f["location"]["within"]) for f in records["custom.docx"]["findings"]}
    assert places == {("CREDIT_CARD", "docProps/custom.xml"), ("EMAIL", "docProps/custom.xml")}, places


def test_generated_packages_with_their_numbers_in_styles_and_themes_stay_clean(tmp_path, write_config):
    """Real writers' styles, themes, settings and relationships are full of numbers (sizes, colours,
    rsids, font panose codes, printer blobs): judged piece by piece, none looks like PII."""
    document = docx.Document()
    document.add_paragraph(CLEAN)
    document.add_table(rows=2, cols=2).cell(1, 1).text = "20231104-7781"
    (tmp_path / "plain.docx").write_bytes(saved(document))
    (tmp_path / "plain.xlsx").write_bytes(book())
    (tmp_path / "plain.pptx").write_bytes(deck())
    (tmp_path / "plain.odt").write_bytes(odt(settings_xml()))
    records = scan(
        write_config(), *(tmp_path / name for name in ("plain.docx", "plain.xlsx", "plain.pptx", "plain.odt"))
    )
    assert {name: r["verdict"] for name, r in records.items()} == dict.fromkeys(records, "clean"), records


def test_a_damaged_structural_part_leaves_a_good_document_judged_and_its_findings_stand(
    tmp_path, write_config
):
    def broken(extra: str):  # the damage first, then what the parser never reaches
        return lambda xml: xml.replace("</w:styles>", f"<w:style><broken{extra}</w:styles>")

    (tmp_path / "clean.docx").write_bytes(edited(word(CLEAN), "word/styles.xml", broken("")))
    (tmp_path / "card.docx").write_bytes(
        edited(word(CLEAN), "word/styles.xml", broken(f"<w:name w:val='{CARD}'/>"))
    )
    entity = '<!DOCTYPE w [<!ENTITY x "4111&#32;1111&#32;1111&#32;1111">]>'  # refused: never expanded
    (tmp_path / "dtd.docx").write_bytes(
        edited(word(CLEAN), "word/styles.xml", lambda xml: xml.replace("?>", "?>" + entity, 1))
    )
    records = scan(write_config(), *(tmp_path / name for name in ("clean.docx", "card.docx", "dtd.docx")))
    assert records["clean.docx"]["verdict"] == "clean", records["clean.docx"]
    assert within(records["card.docx"]) == [["word/styles.xml"]], records["card.docx"]
    refused = records["dtd.docx"]
    assert refused["verdict"] == "unscanned" and "word/styles.xml" in refused["reason"], refused
    assert "DTDForbidden" in refused["reason"], refused


def test_structural_pieces_count_against_the_text_budget():
    huge = f'<w:style w:styleId="x"><w:name w:val="{"名" * 5000}"/></w:style>'
    package = edited(
        word(CLEAN), "word/styles.xml", lambda xml: xml.replace("</w:styles>", huge + "</w:styles>")
    )
    outcome = walk(package, DocumentsSettings(max_text_chars=4000))
    assert any("max_text_chars" in detail for _, detail, _ in outcome.problems), outcome.problems


def test_the_view_of_a_package_puts_each_piece_on_a_line_of_its_own():
    """Four sizes side by side in a tag (`1440 1440 1440 1440`) must never read as a card number: each
    attribute value is a line; repeats are judged once."""
    outcome = walk(word(CLEAN), DocumentsSettings())
    text = next(view[2] for view in outcome.views if view[0] == "text")
    pieces = text.split("\n")
    assert "http://schemas.openxmlformats.org/wordprocessingml/2006/main" in pieces
    assert not re.search(r"\b\d{4} \d{4} \d{4}\b", text)
    structural = [piece for piece in pieces if piece.startswith("http://schemas.")]
    assert len(structural) == len(set(structural)), structural


def test_a_sheets_formulas_and_header_are_judged_beside_its_cells(tmp_path, write_config):
    formula = openpyxl.Workbook()
    formula.active["A1"] = "合計"
    formula.active["B1"] = f'=CONCATENATE("{CARD}", "")'  # no cached value: the formula is all there is
    (tmp_path / "formula.xlsx").write_bytes(saved(formula))
    header = openpyxl.Workbook()
    header.active["A1"] = "会議メモ"
    header.active.oddHeader.center.text = f"担当 {MAIL}"
    (tmp_path / "header.xlsx").write_bytes(saved(header))
    records = scan(write_config(), tmp_path / "formula.xlsx", tmp_path / "header.xlsx")
    assert within(records["formula.xlsx"]) == [["xl/worksheets/sheet1.xml"]], records["formula.xlsx"]
    assert within(records["header.xlsx"]) == [["xl/worksheets/sheet1.xml"]], records["header.xlsx"]


def test_opendocument_attribute_values_are_judged_and_a_number_cell_is_found_once(tmp_path, write_config):
    xlink = 'xmlns:xlink="http://www.w3.org/1999/xlink"'
    link = f'<text:p><text:a {xlink} xlink:href="https://x.example/?k={AWS_KEY}">資料</text:a></text:p>'
    (tmp_path / "link.odt").write_bytes(odf("text", f"<office:text>{link}</office:text>"))
    cells = (
        '<table:table table:name="Cards"><table:table-row><table:table-cell office:value-type="float" '
        f'office:value="{CARD.replace(" ", "")}"><text:p>4.11111111111111E+015</text:p></table:table-cell>'
        "</table:table-row></table:table>"
    )
    (tmp_path / "cards.ods").write_bytes(
        odf("spreadsheet", f"<office:spreadsheet>{cells}</office:spreadsheet>")
    )
    records = scan(write_config(), tmp_path / "link.odt", tmp_path / "cards.ods")
    assert within(records["link.odt"]) == [["content.xml"]], records["link.odt"]
    assert within(records["cards.ods"]) == [["content.xml", "sheet Cards"]], records["cards.ods"]
