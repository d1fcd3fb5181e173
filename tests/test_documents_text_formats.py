"""RTF, HTML, XML and OpenDocument files written at test time, judged end to end by `dropwarden scan`: the
text a reader sees is judged (entities and escapes decoded, markup and control words gone)."""

from __future__ import annotations

from .test_documents_archives import CARD, CLEAN, scan, within, zip_of

ODF_NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0"'
)


def rtf_escaped(text: str) -> str:
    """`text` as RTF writes it: ASCII as is, other characters as Shift_JIS bytes (\\'xx)."""
    return "".join(ch if ord(ch) < 128 else "".join(f"\\'{b:02x}" for b in ch.encode("cp932")) for ch in text)


def rtf(body: str, header: str = "") -> bytes:
    return (
        "{\\rtf1\\ansi\\ansicpg932\\deff0{\\fonttbl{\\f0\\fnil\\fcharset128 MS Mincho;}}"
        "{\\*\\generator Riched20 10.0;}"  # a skipped destination
        + (f"{{\\header {rtf_escaped(header)}\\par}}" if header else "")
        + f"\\f0 {rtf_escaped(body)}\\par}}"
    ).encode("ascii")


def odf(mimetype: str, content: str, styles: str = "", encrypted: bool = False) -> bytes:
    manifest = '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">'
    if encrypted:
        manifest += '<manifest:file-entry manifest:full-path="content.xml"><manifest:encryption-data/>'
        manifest += "</manifest:file-entry>"
    return zip_of(
        {
            "mimetype": f"application/vnd.oasis.opendocument.{mimetype}",
            "content.xml": f"<office:document-content {ODF_NS}><office:body>{content}</office:body>"
            "</office:document-content>",
            "styles.xml": f"<office:document-styles {ODF_NS}><office:master-styles>{styles}"
            "</office:master-styles></office:document-styles>",
            "META-INF/manifest.xml": manifest + "</manifest:manifest>",
        }
    )


def test_rtf_text_in_shift_jis_escapes_and_unicode_escapes_is_read_and_control_words_are_not(
    tmp_path, write_config
):
    (tmp_path / "memo.rtf").write_bytes(rtf("山田様 マイナンバー: 1234 5678 9018", header=f"担当 {CARD}"))
    (tmp_path / "uni.rtf").write_bytes(
        b"{\\rtf1\\ansi\\uc1 \\u23665?\\u30000? card 4111\\~1111 1111 1111\\par}"
    )
    (tmp_path / "clean.rtf").write_bytes(rtf(CLEAN))
    records = scan(write_config(), *(tmp_path / name for name in ("memo.rtf", "uni.rtf", "clean.rtf")))
    types = {f["type"] for f in records["memo.rtf"]["findings"]}
    assert {"JP_MY_NUMBER", "CREDIT_CARD"} <= types, records["memo.rtf"]
    assert ["(rtf text)"] in within(records["uni.rtf"]), records["uni.rtf"]
    assert records["clean.rtf"]["verdict"] == "clean", records["clean.rtf"]


def test_html_and_xml_files_are_judged_as_their_text_with_entities_decoded(tmp_path, write_config):
    split = "4111 <b>1111</b> 1111 <i>1111</i>"  # the markup splits the number for a raw reading
    (tmp_path / "page.html").write_text(f"<!DOCTYPE html><html><body><p>カード {split}</p></body></html>")
    (tmp_path / "data.xml").write_text(
        '<?xml version="1.0"?><customer><card>&#52;111 1111 1111 1111</card></customer>'
    )
    (tmp_path / "clean.html").write_text(
        f"<html><body><p>{CLEAN}</p><script>var v = 42;</script></body></html>"
    )
    records = scan(write_config(), *(tmp_path / name for name in ("page.html", "data.xml", "clean.html")))
    assert ["(html text)"] in within(records["page.html"]), records["page.html"]
    assert ["(xml text)"] in within(records["data.xml"]), records["data.xml"]
    assert records["clean.html"]["verdict"] == "clean", records["clean.html"]


def test_opendocument_text_in_a_header_and_a_number_cell_are_read_with_all_digits(tmp_path, write_config):
    header = (
        f"<style:master-page><style:header><text:p>担当 {CARD}</text:p></style:header></style:master-page>"
    )
    (tmp_path / "letter.odt").write_bytes(
        odf("text", f"<office:text><text:p>{CLEAN}</text:p></office:text>", header)
    )
    cells = (
        '<table:table table:name="Cards"><table:table-row><table:table-cell office:value-type="float" '
        'office:value="4111111111111111"><text:p>4.11111111111111E+015</text:p></table:table-cell>'
        "</table:table-row></table:table>"
    )
    (tmp_path / "sheet.ods").write_bytes(
        odf("spreadsheet", f"<office:spreadsheet>{cells}</office:spreadsheet>")
    )
    (tmp_path / "clean.odt").write_bytes(odf("text", f"<office:text><text:p>{CLEAN}</text:p></office:text>"))
    (tmp_path / "locked.odt").write_bytes(odf("text", "garbage", encrypted=True))
    names = ("letter.odt", "sheet.ods", "clean.odt", "locked.odt")
    records = scan(write_config(), *(tmp_path / name for name in names))
    assert ["styles.xml"] in within(records["letter.odt"]), records["letter.odt"]
    assert ["content.xml", "sheet Cards"] in within(records["sheet.ods"]), records["sheet.ods"]
    assert records["clean.odt"]["verdict"] == "clean", records["clean.odt"]
    locked = records["locked.odt"]
    assert locked["verdict"] == "unscanned" and "encrypted" in locked["reason"], locked


def test_html_and_xml_in_japanese_encodings_are_read_in_them(tmp_path, write_config):
    """HTML in Shift_JIS (meta charset), XML in UTF-16 with its BOM and in a declared Shift_JIS: their
    text read (a number split by a character reference found), clean look-alikes in them stay clean."""
    page = '<html><head><meta charset="Shift_JIS"></head><body><p>山田様 マイナンバー: {}</p></body></html>'
    (tmp_path / "sjis.html").write_bytes(page.format("1234 5678 9018").encode("shift_jis"))
    (tmp_path / "clean-sjis.html").write_bytes(
        page.format("20231104").replace("マイナンバー", "注文").encode("cp932")
    )
    xml = '<?xml version="1.0" encoding="{}"?><顧客><氏名>山田</氏名><カード>&#52;111 1111 1111 1111</カード></顧客>'
    (tmp_path / "utf16.xml").write_bytes(xml.format("UTF-16").encode("utf-16"))
    (tmp_path / "sjis.xml").write_bytes(xml.format("Shift_JIS").encode("shift_jis"))
    clean = f'<?xml version="1.0" encoding="UTF-16"?><メモ>{CLEAN}</メモ>'
    (tmp_path / "clean16.xml").write_bytes(clean.encode("utf-16"))
    names = ("sjis.html", "clean-sjis.html", "utf16.xml", "sjis.xml", "clean16.xml")
    records = scan(write_config(), *(tmp_path / name for name in names))
    assert ["(html text)"] in within(records["sjis.html"]), records["sjis.html"]
    assert {f["type"] for f in records["sjis.html"]["findings"]} >= {"JP_MY_NUMBER"}, records["sjis.html"]
    for name in ("utf16.xml", "sjis.xml"):
        assert ["(xml text)"] in within(records[name]), records[name]
    for name in ("clean-sjis.html", "clean16.xml"):
        assert records[name]["verdict"] == "clean", records[name]
