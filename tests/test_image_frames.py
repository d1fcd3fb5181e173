"""Images are judged whole: frames past max_frames make the file unscanned, and bytes after the image's end
are judged as text. Real images (Pillow), real Tesseract, the real `dropwarden scan` and daemon."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from dropwarden.act.policy import decide
from dropwarden.config import Settings
from dropwarden.judge.framing import EndNotFound, frame_count, image_end
from dropwarden.judge.judge import Judge
from dropwarden.judge.trailing import printable_strings
from dropwarden.redact import Fingerprinter
from dropwarden.registry import Registry
from dropwarden.runtime import build_runtime
from dropwarden.verdict import VerdictKind
from dropwarden_vision import VisionDetector
from tests.conftest import run_cli
from tests.daemon_harness import DaemonProcess
from tests.ocr_pages import Segment, fonts_available, horizontal
from tests.test_ocr import tesseract_ready
from tests.test_vision import FakeServer

CARD = "4111 1111 1111 1111"
SSN = "123-45-6789"
KEY = b"k" * 32


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def picture(size: tuple[int, int] = (64, 48)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).rectangle((8, 8, size[0] - 8, size[1] - 8), outline="navy", fill=(200, 220, 240))
    return image


def frames(count: int, size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    return [Image.new("RGB", size, (20 * i, 255 - 20 * i, 128)) for i in range(count)]


# Every way Pillow writes each format the core cuts at its end: the end found is the image's length.
IMAGES = {
    "png": lambda: encode(picture(), "PNG"),
    "png-interlaced": lambda: encode(picture(), "PNG", interlace=1),
    "apng": lambda: encode(frames(3)[0], "PNG", save_all=True, append_images=frames(3)[1:]),
    "jpeg": lambda: encode(picture(), "JPEG", quality=90),
    "jpeg-progressive-exif": lambda: encode(
        picture(), "JPEG", progressive=True, exif=Image.Exif().tobytes(), comment=b"a comment"
    ),
    "jpeg-restart-markers": lambda: encode(picture((256, 256)), "JPEG", restart_marker_blocks=1),
    "gif": lambda: encode(picture(), "GIF"),
    "gif-animated": lambda: encode(frames(4)[0], "GIF", save_all=True, append_images=frames(4)[1:], loop=0),
    "webp": lambda: encode(picture(), "WEBP"),
    "webp-animated": lambda: encode(frames(3)[0], "WEBP", save_all=True, append_images=frames(3)[1:]),
    "bmp-24bit": lambda: encode(picture((63, 17)), "BMP"),
    "bmp-8bit": lambda: encode(picture((63, 17)).convert("P"), "BMP"),
    "bmp-1bit": lambda: encode(picture((63, 17)).convert("1"), "BMP"),
}
FORMAT = {"apng": "png", "png-interlaced": "png", "gif-animated": "gif", "webp-animated": "webp"}


def sniffed(name: str) -> str:
    return FORMAT.get(name, name.split("-")[0])


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_end_of_every_image_pillow_writes_is_where_it_ends(name):
    data = IMAGES[name]()
    assert image_end(data, sniffed(name)) == len(data)
    assert image_end(data + b"\n" + CARD.encode(), sniffed(name)) == len(data)


def test_a_truncated_image_ends_where_its_data_does_and_tiff_has_no_end():
    png = IMAGES["png"]()
    assert image_end(png[:-20], "png") == len(png) - 20
    assert image_end(encode(picture(), "TIFF"), "tiff") is None


def test_framing_that_cannot_be_walked_is_an_error_not_an_end():
    jpeg = IMAGES["jpeg"]()
    with pytest.raises(EndNotFound, match="no marker"):
        image_end(jpeg[:2] + b"junk" + jpeg[2:], "jpeg")  # bytes hidden between segments
    gif = IMAGES["gif"]()
    with pytest.raises(EndNotFound, match="unknown block"):
        image_end(gif[:-1] + b"X" + CARD.encode(), "gif")  # no trailer: a block no decoder knows


def test_gif_frames_and_tiff_pages_are_counted_without_decoding():
    assert frame_count(encode(frames(7)[0], "GIF", save_all=True, append_images=frames(7)[1:]), "gif") == 7
    assert frame_count(encode(frames(5)[0], "TIFF", save_all=True, append_images=frames(5)[1:]), "tiff") == 5
    assert frame_count(IMAGES["png"](), "png") is None


def test_printable_strings_keep_text_runs_of_binary_data():
    blob = (
        b"\x00\x01\xffPK\x03\x04card "
        + CARD.encode()
        + b"\x00\x9a\xe3\x81\x82\xe3\x81\x84\xe3\x81\x86\xe3\x81\x88\x00abc\x00"
    )
    assert printable_strings(blob).split("\n") == ["card " + CARD, "あいうえ"]


# ------------------------------------------------------------------------------------- trailing bytes


def scan_json(path: Path, config: Path) -> tuple[int, dict]:
    result = run_cli("scan", "--format", "json", "--config", str(config), str(path))
    assert result.returncode in (0, 1, 3), result.stderr
    (record,) = json.loads(result.stdout)["files"]
    return result.returncode, record


@pytest.fixture
def no_ocr(write_config) -> Path:
    return write_config("[ocr]\nenabled = false\n")


@pytest.mark.parametrize("name", ["png", "jpeg", "gif-animated", "webp", "bmp-24bit"])
def test_a_card_number_after_the_end_of_a_clean_image_is_a_finding_in_scan(name, tmp_path, no_ocr):
    path = tmp_path / f"holiday.{sniffed(name)}"
    path.write_bytes(IMAGES[name]() + b"\n" + CARD.encode() + b"\n")
    code, record = scan_json(path, no_ocr)
    assert code == 1 and record["verdict"] == "finding"
    (finding,) = record["findings"]
    assert finding["type"] == "CREDIT_CARD" and finding["location"]["view"] == "trailing"
    assert CARD not in json.dumps(record)


def test_binary_after_the_end_is_judged_by_its_printable_strings(tmp_path, no_ocr):
    path = tmp_path / "photo.jpg"
    path.write_bytes(
        IMAGES["jpeg"]() + os.urandom(3000) + b"\x00ssn " + SSN.encode() + b"\x00" + os.urandom(500)
    )
    code, record = scan_json(path, no_ocr)
    assert code == 1 and [f["type"] for f in record["findings"]] == ["US_SSN"]


def test_text_after_an_image_does_not_make_the_image_judged(tmp_path, no_ocr):
    """With no OCR and no vision nothing looks at the picture: harmless trailing text is judged, and
    the file is still unscanned, not clean."""
    path = tmp_path / "note.png"
    path.write_bytes(IMAGES["png"]() + b"nothing to see here\n")
    code, record = scan_json(path, no_ocr)
    assert code == 3 and record["verdict"] == "unscanned"
    assert record["reason"] == "judge: unsupported_type (no detector judges the image of this png file)"


def test_more_trailing_bytes_than_the_limit_are_unscanned_and_the_ones_read_still_judged(
    tmp_path, write_config
):
    config = write_config("[ocr]\nenabled = false\n[limits]\nmax_trailing_bytes = 4096\n")
    path = tmp_path / "big-tail.gif"
    path.write_bytes(IMAGES["gif"]() + CARD.encode() + b"\n" + b"filler line\n" * 1000)
    code, record = scan_json(path, config)
    assert code == 1 and [f["type"] for f in record["findings"]] == ["CREDIT_CARD"]
    assert "trailing data: too_large" in record["reason"] and "max_trailing_bytes=4096" in record["reason"]
    clean_tail = tmp_path / "clean-tail.gif"
    clean_tail.write_bytes(IMAGES["gif"]() + b"filler line\n" * 1000)
    code, record = scan_json(clean_tail, config)
    assert code == 3 and record["verdict"] == "unscanned" and "too_large" in record["reason"]


def test_an_image_whose_end_cannot_be_found_is_unscanned(tmp_path, no_ocr):
    jpeg = IMAGES["jpeg"]()
    first = 4 + struct.unpack(">H", jpeg[4:6])[0]  # after SOI and the APP0 segment
    path = tmp_path / "odd.jpg"
    path.write_bytes(jpeg[:first] + b"4111111111111111" + jpeg[first:])
    code, record = scan_json(path, no_ocr)
    assert code == 3 and f"image end: decode_error (JPEG: no marker at byte {first}" in record["reason"]


def test_the_daemon_quarantines_a_clean_png_with_a_card_after_iend(tmp_path):
    inbox, outbound, audit = tmp_path / "inbox", tmp_path / "outbound", tmp_path / "audit.jsonl"
    inbox.mkdir()
    config = tmp_path / "dropwarden.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n[audit]\npath = "{audit}"\n[metrics]\nlisten = ""\n'
        f"[ocr]\nenabled = false\n[vision]\nenabled = false\n"
        f'[[watch]]\npath = "{inbox}"\nquarantine_dir = "{tmp_path / "q"}"\nrelease_to = "{outbound}"\n'
    )
    daemon = DaemonProcess(config, audit).start()
    try:
        staged = tmp_path / "chart.png"
        staged.write_bytes(IMAGES["png"]() + CARD.encode())
        staged.rename(inbox / "chart.png")
        (decision,) = daemon.wait_for(lambda: daemon.decisions_for("chart.png"), what="decision")
    finally:
        daemon.stop()
    assert decision["verdict"] == "finding" and [a["op"] for a in decision["actions"]] == ["quarantine"]
    assert [(f["type"], f["location"]["view"]) for f in decision["findings"]] == [("CREDIT_CARD", "trailing")]
    assert not (inbox / "chart.png").exists() and not (outbound / "chart.png").exists()
    assert CARD not in audit.read_text()


# ------------------------------------------------------------------------------------------- frames


@pytest.fixture(scope="module")
def ocr_ready() -> None:
    if not (tesseract_ready() and fonts_available()):
        pytest.skip("tesseract with jpn, jpn_vert and eng, and fonts-noto-cjk")


def pages_with_ssn_on(count: int, ssn_frame: int) -> list[Image.Image]:
    """`count` same-size pages of English text; page `ssn_frame` (0-based) shows a US SSN."""
    pages = []
    for index in range(count):
        line = (
            [Segment(f"Employee SSN {SSN}", "US_SSN")]
            if index == ssn_frame
            else [Segment(f"Page {index + 1}")]
        )
        pages.append(horizontal([line, [Segment("Quarterly report, nothing else")]]).image.convert("RGB"))
    width = max(p.width for p in pages)
    height = max(p.height for p in pages)
    return [p.crop((0, 0, width, height)) for p in pages]


def judge_file(tmp_path: Path, data: bytes, name: str, **ocr: object):
    settings = Settings(state={"dir": str(tmp_path / "state")}, ocr={"enabled": True, **ocr})
    runtime = build_runtime(settings)
    (tmp_path / name).write_bytes(data)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return runtime.judge.judge_name(fd, name, str(tmp_path / name))
    finally:
        os.close(fd)
        runtime.close()


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_an_ssn_on_frame_6_of_10_is_not_clean_when_only_4_frames_are_read(fmt, tmp_path, ocr_ready):
    pages = pages_with_ssn_on(10, ssn_frame=5)
    data = encode(pages[0], fmt, save_all=True, append_images=pages[1:])
    name = f"report.{fmt.lower()}"
    judged = judge_file(tmp_path, data, name, max_frames=4)
    assert judged.verdict.kind == VerdictKind.UNSCANNED
    assert (
        judged.verdict.reason == "extractor ocr-tesseract: too_large (10 frames, only ocr.max_frames=4 read)"
    )
    everything = judge_file(tmp_path, data, name, max_frames=10)
    assert everything.verdict.kind == VerdictKind.FINDING
    assert {(f.type, f.location.view) for f in everything.verdict.findings} == {
        ("US_SSN", "ocr:tesseract:frame5")
    }


def test_findings_on_the_frames_read_stand_beside_the_frames_not_read(tmp_path, ocr_ready):
    pages = pages_with_ssn_on(10, ssn_frame=1)
    judged = judge_file(tmp_path, encode(pages[0], "GIF", save_all=True, append_images=pages[1:]), "a.gif")
    assert (
        judged.verdict.kind == VerdictKind.FINDING
        and "10 frames, only ocr.max_frames=4" in judged.verdict.reason
    )
    decision = decide(Settings(watch=[{"path": "/srv/in"}]).watch[0], judged.verdict)
    assert decision.outcome == "finding" and [f.type for f in decision.acting_findings] == ["US_SSN"]


def test_the_vision_detector_leaves_frames_past_max_frames_unscanned(tmp_path):
    """A model that judges every frame it sees clean cannot make a 10-frame GIF clean when it saw 4."""
    server = FakeServer()
    server.behaviour = "clean"
    try:
        settings = Settings(
            state={"dir": str(tmp_path / "state")},
            ocr={"enabled": False},
            gpu={"lock_dir": str(tmp_path / "gate")},
            vision={"enabled": True, "base_url": server.url, "max_frames": 4, "retries": 0},
        )
        registry = Registry()
        detector = VisionDetector(settings)
        registry.add("detectors", "vision", detector)
        pictures = frames(10)
        (tmp_path / "anim.gif").write_bytes(
            encode(pictures[0], "GIF", save_all=True, append_images=pictures[1:])
        )
        judge = Judge(registry, settings, Fingerprinter(KEY))
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            judged = judge.judge_name(fd, "anim.gif", str(tmp_path / "anim.gif"))
        finally:
            os.close(fd)
            judge.close()
            detector.close()
    finally:
        server.close()
    assert len(server.chats) == 4
    assert judged.verdict.kind == VerdictKind.UNSCANNED
    assert (
        judged.verdict.reason
        == "detector vision on image: too_large (10 frames, only vision.max_frames=4 read)"
    )


def test_a_png_whose_header_hides_a_chunk_length_past_the_data_is_cut_at_the_data():
    png = bytearray(IMAGES["png"]())
    struct.pack_into(">I", png, 8, 0x7FFFFFFF)  # IHDR claims 2 GiB
    assert image_end(bytes(png), "png") == len(png)
