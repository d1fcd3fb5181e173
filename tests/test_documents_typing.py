"""Typing that cannot be talked around: short magics never decide alone, and no binary hides its text."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from dropwarden.judge.sniff import sniff

from .conftest import run_cli

CARD = "4111 1111 1111 1111"


def scan(config: Path, *paths: Path) -> dict[str, dict]:
    result = run_cli("scan", "--format", "json", "--config", str(config), *map(str, paths), timeout=60)
    assert result.returncode in (0, 1, 3), result.stderr
    return {Path(f["path"]).name: f for f in json.loads(result.stdout)["files"]}


def bmp_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (31, 7), (200, 30, 30)).save(out, "BMP")
    return out.getvalue()


def test_a_csv_whose_first_column_is_bmi_is_text_and_its_card_number_is_found(tmp_path, write_config):
    path = tmp_path / "health.csv"
    path.write_text(f"BMI,name,card\n22.5,Taro,{CARD}\n")
    assert sniff(path.read_bytes()).kind == "text"
    record = scan(write_config(), path)["health.csv"]
    assert record["verdict"] == "finding" and "CREDIT_CARD" in {f["type"] for f in record["findings"]}


def test_a_text_starting_with_mz_is_text_not_a_windows_executable(tmp_path, write_config):
    path = tmp_path / "notes.txt"
    path.write_text(f"MZ-series order notes: pay with {CARD}\n")
    assert sniff(path.read_bytes()).kind == "text"
    record = scan(write_config(), path)["notes.txt"]
    assert record["verdict"] == "finding", record


def test_a_real_executable_header_is_still_typed_pe():
    stub = bytearray(b"MZ" + bytes(126))
    stub[0x3C:0x40] = (0x80).to_bytes(4, "little")
    assert sniff(bytes(stub) + b"PE\x00\x00" + bytes(64)).name == "pe"
    assert sniff(bytes(stub) + b"XX\x00\x00" + bytes(64)).name != "pe"


def test_a_real_small_bmp_is_still_an_image_and_a_bmp_header_that_does_not_add_up_is_not():
    data = bmp_bytes()
    assert sniff(data).name == "bmp" and sniff(data).kind == "image"
    assert sniff(data + b"trailing text").name == "bmp"  # bytes after the declared size: still a BMP
    bad_size = data[:2] + (len(data) + 100).to_bytes(4, "little") + data[6:]
    assert sniff(bad_size).name != "bmp"
    bad_reserved = data[:6] + b"\x01\x00" + data[8:]
    assert sniff(bad_reserved).name != "bmp"
    bad_offset = data[:10] + (3).to_bytes(4, "little") + data[14:]
    assert sniff(bad_offset).name != "bmp"
    bad_header = data[:14] + (41).to_bytes(4, "little") + data[18:]
    assert sniff(bad_header).name != "bmp"


def test_text_behind_an_image_magic_that_fails_to_parse_is_judged_as_text_too(tmp_path, write_config):
    """A JPEG start of image, then a CSV: the image cannot be walked, the bytes look like text, and
    the card number in them is a finding (never only a decode error)."""
    path = tmp_path / "export.csv"
    path.write_bytes(b"\xff\xd8\xff\xe0" + f"id,card\n1,{CARD}\n".encode())
    record = scan(write_config(), path)["export.csv"]
    assert record["verdict"] == "finding", record
    assert "text" in {f["location"]["view"] for f in record["findings"]}


def test_ascii_text_behind_a_gif_magic_is_judged_as_text_too(tmp_path, write_config):
    """`GIF87a` then plain ASCII (found by fuzzing: a view of ASCII bytes, whose text is decoded when
    first read, could not be given the fallback's provenance, and judging the file raised)."""
    path = tmp_path / "notes.txt"
    path.write_bytes(f"GIF87a\nid,card\n1,{CARD}\n".encode())
    record = scan(write_config(), path)["notes.txt"]
    assert record["verdict"] == "finding", record
    assert "text" in {f["location"]["view"] for f in record["findings"]}


def test_a_card_number_in_utf16le_inside_an_unknown_binary_is_found_in_its_strings(tmp_path, write_config):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 4 + f"card {CARD}".encode("utf-16-le") + bytes(range(256)) * 4)
    record = scan(write_config(), path)["blob.bin"]
    assert record["verdict"] == "finding", record
    assert [f["location"]["view"] for f in record["findings"]] == ["strings"]
    assert CARD not in json.dumps(record)


def test_an_unknown_binary_without_findings_in_its_strings_stays_unscanned_unsupported(
    tmp_path, write_config
):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 4 + "harmless words".encode("utf-16-le") + b"more ascii words")
    record = scan(write_config(), path)["blob.bin"]
    assert record["verdict"] == "unscanned" and "unsupported_type" in record["reason"], record


def test_the_documents_extractor_trusts_the_cores_typing_and_starts_no_parser_for_plain_files():
    """A file the core typed as an image, or as text that is no mail, RTF, HTML or XML, is not typed
    again nor sent to a parser worker; a CSV starting "PK" (no zip behind it) stays text too."""
    from dropwarden.judge.extract import extract_views
    from dropwarden.judge.intake import FileIdentity, Snapshot
    from dropwarden_documents.extractor import DocumentsExtractor, is_document
    from dropwarden_documents.settings import DocumentsSettings

    class InlineRunner:  # the core's runner without its thread: the extractor bounds itself
        max_trailing_bytes = 1 << 20

        def call(self, function, *args, inline=False):
            return function(*args)

    extractor = DocumentsExtractor(DocumentsSettings())
    try:
        for data in (bmp_bytes(), f"PK,name\n1,{CARD}\n".encode(), f"BMI,card\n22,{CARD}\n".encode()):
            identity = FileIdentity(1, 2, len(data), 3, 4)
            snapshot = Snapshot("/drop/f", data, "0" * 64, identity, 0o644, 0, 0, 1, 4)
            extraction = extract_views(snapshot, [extractor], InlineRunner())
            assert not is_document(data, extraction.views)
        assert extractor.pool.started == 0
    finally:
        extractor.close()
    mail = b"From: a@example.com\nTo: b@example.com\nSubject: x\n\nbody\n"
    assert is_document(mail, [])
