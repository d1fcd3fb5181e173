"""Text views: encodings are detected from the bytes; binary data is never decoded as text."""

from __future__ import annotations

import pytest

from dropwarden.judge.sniff import sniff
from dropwarden.judge.textdecode import DecodeError, decode_text

JAPANESE = "お客様のマイナンバーは下記の通りです。東京都新宿区西新宿二丁目、電話は03-1234-5678まで。"
ENGLISH = "Invoice for services rendered, contact billing@example.com before the end of the month.\n"


@pytest.mark.parametrize(
    ("text", "encoding", "expected"),
    [
        (JAPANESE, "utf-8", "utf-8"),
        (JAPANESE, "utf-8-sig", "utf-8"),
        (JAPANESE, "utf-16", "utf-16-le"),
        (JAPANESE, "utf-16-be-bom", "utf-16-be"),
        (JAPANESE, "shift_jis", "shift_jis"),
        (JAPANESE, "cp932", "shift_jis"),
        (JAPANESE, "euc_jp", "euc-jp"),
        (ENGLISH * 4, "utf-16-le", "utf-16-le"),
        (ENGLISH * 4, "utf-32", "utf-32-le"),
    ],
)
def test_text_in_each_supported_encoding_decodes_to_the_original(text, encoding, expected):
    data = b"\xfe\xff" + text.encode("utf-16-be") if encoding == "utf-16-be-bom" else text.encode(encoding)
    assert sniff(data).kind == "text"
    decoded = decode_text(data)
    assert decoded.text == text
    assert decoded.encoding == expected


def test_latin_text_in_a_legacy_single_byte_encoding_still_decodes():
    data = "Résumé of the naïve café owner, phone 415-555-0132. ".encode("latin-1") * 3
    assert "415-555-0132" in decode_text(data).text


@pytest.mark.parametrize(
    "data",
    [
        b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 4,
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"%PDF-1.7\n" + bytes(range(256)),
        bytes(range(256)) * 16,
        b"text with\x00embedded\x00nul\x00bytes and \x01\x02\x03 control characters" * 10,
    ],
)
def test_binary_data_is_not_classified_as_text(data):
    assert sniff(data).kind != "text"


def test_sniffing_uses_magic_bytes_not_names():
    assert sniff(b"\x89PNG\r\n\x1a\n" + bytes(64)).name == "png"
    assert sniff(b"\xff\xd8\xff\xe0" + bytes(64)).name == "jpeg"
    assert sniff(b"plain words").name == "text"
    assert sniff(b"").kind == "empty"


def test_an_invalid_utf16_body_after_a_bom_is_a_decode_error():
    with pytest.raises(DecodeError):
        decode_text(b"\xff\xfe" + b"\x00\xd8")  # lone high surrogate


def test_a_utf8_file_keeps_its_own_bytes_for_byte_matchers_and_other_encodings_do_not():
    from dropwarden.views import TextView

    data = JAPANESE.encode("utf-8")
    decoded = decode_text(data)
    assert decoded.utf8 is data
    view = TextView.from_utf8("text", decoded.text, decoded.utf8)
    assert view.utf8 is data and view.utf8 == view.text.encode("utf-8")
    assert decode_text(b"\xef\xbb\xbf" + data).utf8 == data  # BOM stripped
    assert decode_text(JAPANESE.encode("shift_jis")).utf8 is None
    assert decode_text(ENGLISH.encode("utf-16-le") * 4).utf8 is None
