"""What an image hides besides its pixels is judged: text in its metadata (PNG text chunks, JPEG comments,
EXIF, XMP) as view `metadata`, and an image appended after its end as an image OCR reads. Real images
(Pillow), real Tesseract, the real `dropwarden scan` and daemon."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, PngImagePlugin

from dropwarden.judge.extract import MAX_APPENDED
from dropwarden.judge.metadata import MAX_METADATA_BYTES
from tests.conftest import run_cli
from tests.daemon_harness import DaemonProcess
from tests.ocr_pages import Segment, fonts_available, horizontal
from tests.test_ocr import tesseract_ready

CARD = "4111 1111 1111 1111"
SSN = "123-45-6789"


@pytest.fixture(scope="module")
def ocr_ready() -> None:
    if not (tesseract_ready() and fonts_available()):
        pytest.skip("tesseract with jpn, jpn_vert and eng, and fonts-noto-cjk")


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def picture() -> Image.Image:
    """A harmless picture: OCR reads nothing in it."""
    image = Image.new("RGB", (96, 64), "white")
    ImageDraw.Draw(image).rectangle((10, 10, 86, 54), outline="navy", fill=(200, 220, 240))
    return image


def ssn_picture() -> Image.Image:
    return horizontal([[Segment(f"SSN {SSN}", "US_SSN")]], size=48).image.convert("RGB")


def exif(**tags: object) -> bytes:
    data = Image.Exif()
    names = {"description": 0x010E, "artist": 0x013B, "xp_comment": 0x9C9C}
    for name, value in tags.items():
        if name == "user_comment":
            data.get_ifd(0x8769)[0x9286] = value
        else:
            data[names[name]] = value
    return data.tobytes()


def png_text(kind: str, key: str, text: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    if kind == "tEXt":
        info.add_text(key, text)
    elif kind == "zTXt":
        info.add_text(key, text, zip=True)
    else:
        info.add_itxt(key, text, lang="en", zip=kind == "iTXt-compressed")
    return info


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def after_idat(png: bytes, extra: bytes) -> bytes:
    """`png` with `extra` chunks placed just before IEND, where Pillow's `info` never looks."""
    return png[:-12] + extra + png[-12:]


CARD_IN = f"card {CARD}"
# A harmless picture carrying a card number in each kind of metadata.
HIDDEN: dict[str, tuple[str, Callable[[], bytes]]] = {
    "png-tEXt": ("png", lambda: encode(picture(), "PNG", pnginfo=png_text("tEXt", "Comment", CARD_IN))),
    "png-zTXt": ("png", lambda: encode(picture(), "PNG", pnginfo=png_text("zTXt", "Comment", CARD_IN))),
    "png-iTXt": ("png", lambda: encode(picture(), "PNG", pnginfo=png_text("iTXt", "Title", CARD_IN))),
    "png-iTXt-compressed": (
        "png",
        lambda: encode(picture(), "PNG", pnginfo=png_text("iTXt-compressed", "Title", CARD_IN)),
    ),
    "png-tEXt-after-IDAT": (
        "png",
        lambda: after_idat(encode(picture(), "PNG"), chunk(b"tEXt", b"Comment\x00" + CARD_IN.encode())),
    ),
    "png-private-chunk": (
        "png",
        lambda: after_idat(encode(picture(), "PNG"), chunk(b"caRd", b"\x00\x01" + CARD_IN.encode())),
    ),
    "png-eXIf-artist": ("png", lambda: encode(picture(), "PNG", exif=exif(artist=CARD_IN))),
    "jpeg-comment": ("jpg", lambda: encode(picture(), "JPEG", comment=CARD_IN.encode())),
    "jpeg-exif-description": ("jpg", lambda: encode(picture(), "JPEG", exif=exif(description=CARD_IN))),
    "jpeg-exif-user-comment-ascii": (
        "jpg",
        lambda: encode(picture(), "JPEG", exif=exif(user_comment=b"ASCII\x00\x00\x00" + CARD_IN.encode())),
    ),
    "jpeg-exif-user-comment-unicode": (
        "jpg",
        lambda: encode(
            picture(), "JPEG", exif=exif(user_comment=b"UNICODE\x00" + CARD_IN.encode("utf-16-le"))
        ),
    ),
    "jpeg-exif-xp-comment": (
        "jpg",
        lambda: encode(picture(), "JPEG", exif=exif(xp_comment=CARD_IN.encode("utf-16-le"))),
    ),
    "jpeg-xmp": (
        "jpg",
        lambda: encode(
            picture(), "JPEG", xmp=f"<x:xmpmeta><dc:description>{CARD_IN}</dc:description>".encode()
        ),
    ),
    "gif-comment": ("gif", lambda: encode(picture(), "GIF", comment=CARD_IN.encode())),
    "webp-exif": ("webp", lambda: encode(picture(), "WEBP", exif=exif(artist=CARD_IN))),
    "webp-xmp": ("webp", lambda: encode(picture(), "WEBP", xmp=f"<x:xmpmeta>{CARD_IN}</x:xmpmeta>".encode())),
    "tiff-description": ("tiff", lambda: encode(picture(), "TIFF", description=CARD_IN)),
    "tiff-exif-user-comment": (
        "tiff",
        lambda: encode(picture(), "TIFF", exif=exif(user_comment=b"ASCII\x00\x00\x00" + CARD_IN.encode())),
    ),
}


def scan(config: Path | None, *paths: Path) -> dict[str, dict]:
    """`dropwarden scan --format json` of `paths` in one real process: each file's record by name."""
    options = ["--config", str(config)] if config else []
    result = run_cli("scan", "--format", "json", *options, *map(str, paths), timeout=300)
    assert result.returncode in (0, 1, 3), result.stderr
    return {Path(record["path"]).name: record for record in json.loads(result.stdout)["files"]}


def test_a_card_number_in_any_metadata_of_a_clean_picture_is_a_finding(tmp_path, write_config, ocr_ready):
    """OCR reads nothing in the picture; the card in its text chunk, comment, EXIF or XMP is found in view
    `metadata`, and never written raw."""
    paths = []
    for name, (suffix, make) in HIDDEN.items():
        paths.append(tmp_path / f"{name}.{suffix}")
        paths[-1].write_bytes(make())
    records = scan(write_config(""), *paths)
    for path in paths:
        record = records[path.name]
        assert record["verdict"] == "finding", (path.name, record)
        assert [(f["type"], f["location"]["view"]) for f in record["findings"]] == [
            ("CREDIT_CARD", "metadata")
        ], path.name
        assert CARD not in json.dumps(record)


def test_a_clean_picture_with_harmless_metadata_stays_clean(tmp_path, write_config, ocr_ready):
    path = tmp_path / "holiday.jpg"
    path.write_bytes(
        encode(
            picture(),
            "JPEG",
            comment=b"taken at the lake",
            exif=exif(artist="A. Painter", description="lake"),
        )
    )
    assert scan(write_config(""), path)[path.name]["verdict"] == "clean"


def test_metadata_that_cannot_be_decoded_is_unscanned_not_clean(tmp_path, write_config, ocr_ready):
    path = tmp_path / "broken.png"
    path.write_bytes(after_idat(encode(picture(), "PNG"), chunk(b"zTXt", b"Comment\x00\x00not zlib at all")))
    record = scan(write_config(""), path)[path.name]
    assert record["verdict"] == "unscanned"
    assert "metadata: decode_error (PNG zTXt chunk at byte" in record["reason"]


def test_metadata_past_the_cap_is_too_large_and_what_was_read_is_still_judged(tmp_path, write_config):
    text = CARD_IN + "\n" + "filler " * (MAX_METADATA_BYTES // 6)
    path = tmp_path / "bomb.png"
    path.write_bytes(
        after_idat(
            encode(picture(), "PNG"), chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(text.encode()))
        )
    )
    record = scan(write_config("[ocr]\nenabled = false\n"), path)[path.name]
    assert record["verdict"] == "finding" and [f["type"] for f in record["findings"]] == ["CREDIT_CARD"]
    assert "metadata: too_large" in record["reason"] and "MAX_METADATA_BYTES" in record["reason"]


# --------------------------------------------------------------------------------------- appended images


@pytest.mark.parametrize("first,second", [("PNG", "JPEG"), ("JPEG", "PNG"), ("GIF", "JPEG")])
def test_an_ssn_drawn_in_an_image_appended_after_the_end_is_read_by_ocr(
    first, second, tmp_path, write_config, ocr_ready
):
    """The bytes after the end of a clean picture are a second image showing an SSN: OCR reads it (its
    printable strings hold nothing), and the file is a finding."""
    path = tmp_path / f"holiday.{first.lower()}"
    path.write_bytes(encode(picture(), first) + encode(ssn_picture(), second))
    record = scan(write_config(""), path)[path.name]
    assert record["verdict"] == "finding", record
    assert [f["type"] for f in record["findings"]] == ["US_SSN"]
    assert SSN not in json.dumps(record)


def test_a_card_in_the_metadata_of_an_appended_image_is_found(tmp_path, write_config, ocr_ready):
    path = tmp_path / "pair.png"
    path.write_bytes(
        encode(picture(), "PNG") + encode(picture(), "PNG", pnginfo=png_text("zTXt", "c", CARD_IN))
    )
    record = scan(write_config(""), path)[path.name]
    assert [(f["type"], f["location"]["view"]) for f in record["findings"]] == [
        ("CREDIT_CARD", "metadata:appended1")
    ]


def test_more_appended_images_than_the_limit_leave_the_file_unscanned(tmp_path, write_config, ocr_ready):
    path = tmp_path / "stack.png"
    path.write_bytes(b"".join(encode(picture(), "PNG") for _ in range(MAX_APPENDED + 2)))
    record = scan(write_config(""), path)[path.name]
    assert record["verdict"] == "unscanned"
    assert record["reason"] == (
        f"appended images: too_large (more than {MAX_APPENDED} images appended after the image's end,"
        f" only {MAX_APPENDED} read (MAX_APPENDED))"
    )
    within = tmp_path / "pair.png"
    within.write_bytes(b"".join(encode(picture(), "PNG") for _ in range(MAX_APPENDED + 1)))
    assert scan(write_config(""), within)[within.name]["verdict"] == "clean"


def test_text_after_an_image_that_starts_like_a_bmp_is_text_not_an_image(tmp_path, write_config, ocr_ready):
    path = tmp_path / "note.png"
    path.write_bytes(encode(picture(), "PNG") + b"BMW parts list, nothing else\n")
    assert scan(write_config(""), path)[path.name]["verdict"] == "clean"


def test_the_daemon_quarantines_a_card_in_a_jpeg_comment_and_an_ssn_in_an_appended_image(tmp_path, ocr_ready):
    inbox, outbound, audit = tmp_path / "inbox", tmp_path / "outbound", tmp_path / "audit.jsonl"
    inbox.mkdir()
    config = tmp_path / "dropwarden.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n[audit]\npath = "{audit}"\n[metrics]\nlisten = ""\n'
        f"[ocr]\nenabled = true\n[vision]\nenabled = false\n"
        f'[[watch]]\npath = "{inbox}"\nquarantine_dir = "{tmp_path / "q"}"\nrelease_to = "{outbound}"\n'
    )
    files = {
        "comment.jpg": encode(picture(), "JPEG", comment=CARD_IN.encode()),
        "pair.png": encode(picture(), "PNG") + encode(ssn_picture(), "JPEG"),
        "plain.png": encode(picture(), "PNG"),
    }
    daemon = DaemonProcess(config, audit).start()
    try:
        for name, data in files.items():
            staged = tmp_path / name
            staged.write_bytes(data)
            staged.rename(inbox / name)
        decisions = {
            name: daemon.wait_for(lambda name=name: daemon.decisions_for(name), what=f"decision on {name}")[0]
            for name in files
        }
    finally:
        daemon.stop()
    assert [(f["type"], f["location"]["view"]) for f in decisions["comment.jpg"]["findings"]] == [
        ("CREDIT_CARD", "metadata")
    ]
    assert [f["type"] for f in decisions["pair.png"]["findings"]] == ["US_SSN"]
    for name in ("comment.jpg", "pair.png"):
        assert decisions[name]["verdict"] == "finding"
        assert [a["op"] for a in decisions[name]["actions"]] == ["quarantine"]
        assert not (outbound / name).exists()
    assert decisions["plain.png"]["verdict"] == "clean" and (outbound / "plain.png").exists()
    assert CARD not in audit.read_text() and SSN not in audit.read_text()
