"""Legacy OLE files (.xls by xlwt; .doc, .ppt, .msg by tests/ole_writer.py) judged end to end by
`dropwarden scan`: the text of their main streams, where each finding is, damage unscanned."""

from __future__ import annotations

import io
import struct

import olefile
import pytest
import xlwt

from dropwarden_documents.formats import walk
from dropwarden_documents.lzfu import BadCompressedRtf, decompress
from dropwarden_documents.settings import DocumentsSettings
from dropwarden_documents.walk import LimitReached

from .ole_writer import compound_file, compressed_rtf
from .test_documents_archives import CARD, CLEAN, scan, within
from .test_documents_office import word

MY_NUMBER = "マイナンバー: 1234 5678 9018"
CARD_DIGITS = 4111111111111111


def excel(hidden_value: object, visible_value: object = "売上 20231104") -> bytes:
    """A real .xls (BIFF8) with a visible sheet and a hidden one holding `hidden_value` at C3."""
    book = xlwt.Workbook(encoding="utf-8")
    book.add_sheet("顧客").write(1, 1, visible_value)
    hidden = book.add_sheet("Archive")
    hidden.visibility = 1
    hidden.write(2, 2, hidden_value)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def word_97(ascii_text: str, unicode_text: str, clx_at: int = 16, flags: int = 0x0200) -> bytes:
    """A .doc: a Word 97 FIB, the text as two pieces (8-bit compressed, then UTF-16LE), the piece
    table in 1Table at `clx_at` (where the FIB says it is)."""
    fib = bytearray(1024)
    struct.pack_into("<HH", fib, 0, 0xA5EC, 0x00C1)
    struct.pack_into("<H", fib, 0x0A, flags)  # 0x0200 fWhichTblStm: 1Table; 0x0100 fEncrypted
    struct.pack_into("<H", fib, 32, 14)  # csw
    struct.pack_into("<H", fib, 62, 22)  # cslw
    struct.pack_into("<I", fib, 64 + 12, len(ascii_text) + len(unicode_text))  # ccpText
    struct.pack_into("<H", fib, 152, 0x5D)  # cbRgFcLcb
    narrow = ascii_text.encode("cp1252")
    wide = unicode_text.encode("utf-16-le")
    stream = bytes(fib) + narrow + b"\0" * (len(narrow) % 2) + wide
    wide_at = 1024 + len(narrow) + len(narrow) % 2
    cps = struct.pack("<III", 0, len(ascii_text), len(ascii_text) + len(unicode_text))
    pieces = struct.pack("<HIH", 0, 0x40000000 | (1024 * 2), 0) + struct.pack("<HIH", 0, wide_at, 0)
    plc = cps + pieces
    clx = b"\x01" + struct.pack("<H", 2) + b"\0\0" + b"\x02" + struct.pack("<I", len(plc)) + plc
    table = b"\0" * 16 + clx
    struct.pack_into("<II", stream := bytearray(stream), 154 + 33 * 8, clx_at, len(clx))
    return compound_file({"WordDocument": bytes(stream), "1Table": table})


def _record(kind: int, body: bytes, instance: int = 0, container: bool = False) -> bytes:
    return struct.pack("<HHI", (instance << 4) | (0xF if container else 0), kind, len(body)) + body


def powerpoint(*slides: str) -> bytes:
    """A .ppt: a DocumentContainer with a slide list, each slide a persist atom and its text atom
    (TextCharsAtom, UTF-16LE; a slide of pure ASCII as TextBytesAtom)."""
    atoms = b""
    for number, text in enumerate(slides, start=1):
        atoms += _record(0x03F3, struct.pack("<IIiII", number, 0, 0, 255 + number, 0))
        atoms += _record(0x0F9F, struct.pack("<I", 1))
        if text.isascii():
            atoms += _record(0x0FA8, text.encode("cp1252"))
        else:
            atoms += _record(0x0FA0, text.encode("utf-16-le"))
    document = _record(
        0x03E8, _record(0x03E9, b"\0" * 40) + _record(0x0FF0, atoms, container=True), container=True
    )
    return compound_file({"PowerPoint Document": document, "Current User": b"\0" * 20})


def _unicode(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\0\0"


def outlook(
    body: str,
    html: str = "",
    attachments: dict[str, bytes] | None = None,
    attached_message_body: str = "",
    body_charset: str = "",
    rtf_body: bytes = b"",
) -> bytes:
    """An Outlook .msg: subject, sender and one recipient by display name, body, HTML body, attachments,
    and an attached message (a storage of its own) with `attached_message_body`."""
    streams = {
        "__properties_version1.0": b"\0" * 32,
        "__substg1.0_0037001F": _unicode("週次報告"),
        "__substg1.0_0C1A001F": _unicode("総務部"),
        "__substg1.0_1000001E" if body_charset else "__substg1.0_1000001F": (
            body.encode(body_charset) + b"\0" if body_charset else _unicode(body)
        ),
        "__recip_version1.0_#00000000/__substg1.0_3001001F": _unicode("全員"),
    }
    if html:
        streams["__substg1.0_10130102"] = html.encode("utf-8")
    if rtf_body:  # PR_RTF_COMPRESSED, already compressed
        streams["__substg1.0_10090102"] = rtf_body
    for index, (name, data) in enumerate((attachments or {}).items()):
        storage = f"__attach_version1.0_#{index:08X}"
        streams[f"{storage}/__substg1.0_3707001F"] = _unicode(name)
        streams[f"{storage}/__substg1.0_37010102"] = data
    if attached_message_body:
        storage = "__attach_version1.0_#00000009"
        streams[f"{storage}/__substg1.0_3707001F"] = _unicode("転送.msg")
        streams[f"{storage}/__substg1.0_3701000D/__substg1.0_1000001F"] = _unicode(attached_message_body)
    return compound_file(streams)


def test_the_test_writer_makes_compound_files_a_real_parser_opens():
    ole = olefile.OleFileIO(outlook(CLEAN, attachments={"big.bin": b"x" * 9000}))
    assert ole.openstream("__substg1.0_1000001F").read().decode("utf-16-le").rstrip("\0") == CLEAN
    assert len(ole.openstream("__attach_version1.0_#00000000/__substg1.0_37010102").read()) == 9000


def test_a_card_in_a_hidden_xls_sheet_is_found_with_its_sheet_and_cell(tmp_path, write_config):
    (tmp_path / "number.xls").write_bytes(excel(CARD_DIGITS))  # a number cell: all its digits
    (tmp_path / "text.xls").write_bytes(excel(f"山田太郎 {MY_NUMBER}"))
    records = scan(write_config(), tmp_path / "number.xls", tmp_path / "text.xls")
    assert within(records["number.xls"]) == [["sheet Archive (hidden)", "cell C3"]], records["number.xls"]
    assert ["sheet Archive (hidden)", "cell C3"] in within(records["text.xls"]), records["text.xls"]


def test_the_text_of_a_doc_is_read_through_its_piece_table(tmp_path, write_config):
    (tmp_path / "card.doc").write_bytes(word_97(f"Invoice card {CARD}\r", "本日の議事録です。\r"))
    (tmp_path / "japanese.doc").write_bytes(word_97("Minutes\r", f"山田太郎様 {MY_NUMBER}\r"))
    records = scan(write_config(), tmp_path / "card.doc", tmp_path / "japanese.doc")
    assert within(records["card.doc"]) == [["WordDocument"]], records["card.doc"]
    assert ["WordDocument"] in within(records["japanese.doc"]), records["japanese.doc"]


def test_a_doc_whose_piece_table_cannot_be_read_is_judged_by_its_text_runs_and_stays_unscanned():
    document = word_97("Minutes\r", f"カード {CARD}\r", clx_at=10_000)  # beyond the table stream
    outcome = walk(document, DocumentsSettings())
    views = {tuple(view[3]["within"]): view[2] for view in outcome.views}
    assert CARD in views[("WordDocument (text runs)",)], views
    assert [reason for reason, _, _ in outcome.problems] == ["decode_error"], outcome.problems


def test_text_on_a_ppt_slide_is_found_with_its_slide_number(tmp_path, write_config):
    (tmp_path / "deck.ppt").write_bytes(powerpoint("Agenda", f"山田太郎 {MY_NUMBER}", f"Pay {CARD}"))
    record = scan(write_config(), tmp_path / "deck.ppt")["deck.ppt"]
    places = {f["type"]: f["location"]["within"] for f in record["findings"]}
    assert places == {"JP_MY_NUMBER": ["slide 2"], "CREDIT_CARD": ["slide 3"]}, record


def test_a_msg_body_html_body_and_attached_docx_are_found_and_named(tmp_path, write_config):
    (tmp_path / "body.msg").write_bytes(outlook(f"山田様\n{MY_NUMBER}\n"))
    (tmp_path / "sjis.msg").write_bytes(outlook(f"山田様\n{MY_NUMBER}\n", body_charset="shift_jis"))
    (tmp_path / "html.msg").write_bytes(
        outlook(CLEAN, html="<html><body><p>カード 4111 1111 <b>1111</b> 1111</p></body></html>")
    )
    report = word(header=f"担当 {CARD}")
    (tmp_path / "attached.msg").write_bytes(outlook(CLEAN, attachments={"report.docx": report}))
    names = ("body.msg", "sjis.msg", "html.msg", "attached.msg")
    records = scan(write_config(), *(tmp_path / n for n in names))
    assert ["body"] in within(records["body.msg"]), records["body.msg"]
    assert ["body"] in within(records["sjis.msg"]), records["sjis.msg"]  # PT_STRING8 in Shift_JIS
    assert within(records["html.msg"]) == [["body (html)"]], records["html.msg"]
    assert ["attachment report.docx", "word/header1.xml"] in within(records["attached.msg"]), records[
        "attached.msg"
    ]


def test_clean_look_alikes_in_every_ole_format_stay_clean(tmp_path, write_config):
    files = {
        "clean.xls": excel("注文番号 20231104-7781", 20231104),
        "clean.doc": word_97("Order 20231104-7781 ships Tuesday\r", CLEAN),
        "clean.ppt": powerpoint("Agenda", CLEAN),
        "clean.msg": outlook(
            CLEAN,
            html=f"<p>{CLEAN}</p><script>var c='{CARD}';</script>",
            attachments={"notes.txt": CLEAN.encode()},
        ),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    records = scan(write_config(), *(tmp_path / name for name in files))
    for name in files:
        assert records[name]["verdict"] == "clean", records[name]


def test_truncated_corrupt_and_unknown_ole_files_are_unscanned_never_clean(tmp_path, write_config):
    whole = outlook(CLEAN, attachments={"big.bin": b"x" * 9000})
    (tmp_path / "truncated.msg").write_bytes(whole[: len(whole) // 2])
    corrupt = bytearray(excel("注文番号"))
    corrupt[600:2000] = b"\xff" * 1400
    (tmp_path / "corrupt.xls").write_bytes(bytes(corrupt))
    (tmp_path / "unknown.bin").write_bytes(compound_file({"Contents": CLEAN.encode() * 300}))
    records = scan(write_config(), *(tmp_path / n for n in ("truncated.msg", "corrupt.xls", "unknown.bin")))
    for name in ("truncated.msg", "corrupt.xls", "unknown.bin"):
        assert records[name]["verdict"] == "unscanned", records[name]
    assert "unsupported_type" in str(records["unknown.bin"]), records["unknown.bin"]


def test_an_attached_message_is_read_as_a_message_and_named(tmp_path, write_config):
    (tmp_path / "forward.msg").write_bytes(outlook(CLEAN, attached_message_body=f"山田様 {MY_NUMBER}"))
    record = scan(write_config(), tmp_path / "forward.msg")["forward.msg"]
    assert ["attachment 転送.msg", "body"] in within(record), record


def test_an_encrypted_doc_is_unscanned_as_encrypted(tmp_path, write_config):
    (tmp_path / "locked.doc").write_bytes(word_97("Minutes\r", CLEAN, flags=0x0300))
    record = scan(write_config(), tmp_path / "locked.doc")["locked.doc"]
    assert record["verdict"] == "unscanned" and "encrypted" in str(record), record


def test_a_piece_table_bomb_and_a_record_nesting_bomb_stay_bounded():
    """50,000 pieces each naming the whole text (50,000 times the stream) and PowerPoint containers
    nested 10,000 deep: each read within its bounds, ending as a problem, never expanded."""
    narrow = b"x" * 60_000
    fib = bytearray(word_97("x", "y"))
    stream = bytearray(olefile.OleFileIO(bytes(fib)).openstream("WordDocument").read()[:1024]) + narrow
    count = 50_000
    plc = struct.pack(f"<{count + 1}I", *(i * len(narrow) for i in range(count + 1)))
    plc += struct.pack("<HIH", 0, 0x40000000 | 2048, 0) * count
    clx = b"\x02" + struct.pack("<I", len(plc)) + plc
    struct.pack_into("<II", stream, 154 + 33 * 8, 0, len(clx))
    doc = walk(compound_file({"WordDocument": bytes(stream), "1Table": clx}), DocumentsSettings())
    assert sum(len(view[2]) for view in doc.views) < 2 * len(stream), doc.problems
    assert doc.problems and doc.problems[0][0] == "decode_error", doc.problems
    nested = b""
    for _ in range(10_000):
        nested = _record(0x03E8, nested, container=True)
    ppt = walk(compound_file({"PowerPoint Document": nested}), DocumentsSettings())
    assert [reason for reason, _, _ in ppt.problems] == ["decode_error"], ppt.problems


# MS-OXRTFCP 4.1.1: "{\\rtf1\\ansi\\ansicpg1252\\pard hello world}\r\n" compressed with references.
SPEC_EXAMPLE = bytes.fromhex(
    "2d0000002b0000004c5a4675f1c5c7a703000a007263706731323542320af32068656c090020627705b06c647d0a800fa0"
)


def test_compressed_rtf_is_decompressed_as_the_specification_says_within_its_bounds():
    assert decompress(SPEC_EXAMPLE, 1000) == b"{\\rtf1\\ansi\\ansicpg1252\\pard hello world}\r\n"
    assert decompress(compressed_rtf(b"{\\rtf1 \\'83\\'4a}"), 1000) == b"{\\rtf1 \\'83\\'4a}"
    damaged = bytearray(SPEC_EXAMPLE)
    damaged[30] ^= 0x40
    with pytest.raises(BadCompressedRtf, match="CRC"):
        decompress(bytes(damaged), 1000)
    with pytest.raises(LimitReached):  # a declared size past the limit: refused before any output
        decompress(SPEC_EXAMPLE, 20)


def test_a_msg_whose_only_body_is_compressed_rtf_is_read(tmp_path, write_config):
    """Shift_JIS bytes (\\'xx under \\fcharset128) and \\uN both decoded; a clean look-alike stays
    clean; a damaged one is unscanned, never clean."""
    sjis = "".join(f"\\'{byte:02x}" for byte in "山田様".encode("shift_jis"))
    rtf = (
        "{\\rtf1\\ansi\\ansicpg932{\\fonttbl{\\f0\\fcharset128 MS Gothic;}}\\f0 "
        f"{sjis}\\par \\u12459?\\u12540?\\u12489? {CARD}\\par}}"
    )
    (tmp_path / "rtf.msg").write_bytes(outlook("", rtf_body=compressed_rtf(rtf.encode())))
    clean_rtf = "{\\rtf1\\ansi 注文番号 20231104-7781-0001\\par}".encode("shift_jis")
    (tmp_path / "clean.msg").write_bytes(outlook("", rtf_body=compressed_rtf(clean_rtf)))
    damaged = bytearray(compressed_rtf(rtf.encode()))
    damaged[-5] ^= 0x01
    (tmp_path / "damaged.msg").write_bytes(outlook("", rtf_body=bytes(damaged)))
    records = scan(write_config(), *(tmp_path / n for n in ("rtf.msg", "clean.msg", "damaged.msg")))
    assert within(records["rtf.msg"]) == [["body (rtf)"]], records["rtf.msg"]
    assert records["clean.msg"]["verdict"] == "clean", records["clean.msg"]
    assert records["damaged.msg"]["verdict"] == "unscanned", records["damaged.msg"]
    assert "body (rtf)" in records["damaged.msg"]["reason"], records["damaged.msg"]
    outcome = walk(outlook("", rtf_body=compressed_rtf(rtf.encode())), DocumentsSettings())
    texts = [view[2] for view in outcome.views if view[-1]["within"] == ["body (rtf)"]]
    assert texts and "山田様" in texts[0] and "カード" in texts[0], texts
