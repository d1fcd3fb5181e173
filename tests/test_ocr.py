"""OCR: text read from images is judged by the text rules, and findings say where in the image they are.

Pages are rendered at test time with a real CJK font (tests/ocr_pages.py) and read by the real
Tesseract; both must be installed (Debian: tesseract-ocr{,-jpn,-jpn-vert,-eng}, fonts-noto-cjk).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import struct
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from dropwarden.config import Settings
from dropwarden.judge.detect import DetectorRunner
from dropwarden.judge.extract import extract_views
from dropwarden.judge.intake import take_snapshot
from dropwarden.runtime import build_runtime
from dropwarden_ocr.engine import OcrError
from dropwarden_ocr.tesseract import probe, tesseract_regions

from .conftest import require, run_cli
from .daemon_harness import DaemonProcess
from .ocr_pages import (
    Page,
    Segment,
    card,
    email,
    fonts_available,
    full_width,
    horizontal,
    my_number,
    vertical,
)

RND = random.Random(20261123)
PHONE_JA = "090-4412-8830"
MY_NUMBER = my_number(RND)  # "dddd dddd dddd", check digit valid
CARD = card(RND)  # Luhn-valid, grouped in fours
EMAIL = email(RND)


def tesseract_ready() -> bool:
    found = probe("tesseract")
    return found.problem is None and not found.missing("jpn+jpn_vert+eng")


@pytest.fixture(scope="module")
def ocr_ready() -> None:
    require(tesseract_ready(), "tesseract with jpn, jpn_vert and eng language data")
    require(fonts_available(), "fonts-noto-cjk and Pillow with libraqm")


@pytest.fixture(scope="module")
def judge_image(tmp_path_factory, ocr_ready):
    """Judge image bytes as `dropwarden scan` does (intake, OCR extractor, regex detector, verdict)."""
    root = tmp_path_factory.mktemp("ocr")
    runtimes = {}

    def judge(data: bytes, name: str = "page.png", **ocr: object):
        key = json.dumps(ocr, sort_keys=True)
        if key not in runtimes:
            settings = Settings(state={"dir": root / "state"}, ocr={"enabled": True, **ocr})
            runtimes[key] = build_runtime(settings)
        folder = root / "in"
        folder.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return runtimes[key].judge.judge_name(fd, name, str(folder / name))
        finally:
            os.close(fd)

    yield judge
    for runtime in runtimes.values():
        runtime.close()


def content_views(judgement) -> list[str]:
    """The views detectors judged, but for the file's name (views "name", "name:words")."""
    return [run.view for run in judgement.runs if run.view.partition(":")[0] != "name"]


def overlap(found: tuple[int, ...], drawn: tuple[int, ...]) -> float:
    """The share of the drawn box that the finding's box covers."""
    width = min(found[2], drawn[2]) - max(found[0], drawn[0])
    height = min(found[3], drawn[3]) - max(found[1], drawn[1])
    return max(0, width) * max(0, height) / ((drawn[2] - drawn[0]) * (drawn[3] - drawn[1]))


def assert_found_where_drawn(judgement, page: Page) -> None:
    findings = judgement.verdict.findings
    assert judgement.verdict.kind == "finding", judgement.verdict
    assert sorted(f.type for f in findings) == sorted(s.kind for s in page.seeded)
    for seeded in page.seeded:
        (finding,) = [f for f in findings if f.type == seeded.kind]
        assert finding.location.view == "ocr:tesseract"
        assert overlap(finding.location.bbox, seeded.box) > 0.8, (seeded, finding.location)
        # the box is the value's, not the whole page's
        box = finding.location.bbox
        assert (box[2] - box[0]) * (box[3] - box[1]) < 3 * (
            (seeded.box[2] - seeded.box[0]) * (seeded.box[3] - seeded.box[1])
        )


# ------------------------------------------------------------------------------- reading PII in images


def test_horizontal_japanese_pii_is_found_where_it_was_drawn(judge_image):
    page = horizontal(
        [
            [Segment("お問い合わせは電話 "), Segment(PHONE_JA, "PHONE"), Segment(" まで")],
            [Segment("マイナンバー："), Segment(full_width(MY_NUMBER), "JP_MY_NUMBER")],
            [Segment("カード番号 "), Segment(CARD, "CREDIT_CARD")],
            [Segment("メール "), Segment(EMAIL, "EMAIL")],
        ]
    )
    assert_found_where_drawn(judge_image(page.encode()), page)


def test_vertical_japanese_pii_with_full_width_digits_is_found_where_it_was_drawn(judge_image):
    page = vertical(
        [
            [Segment("電話"), Segment(full_width(PHONE_JA), "PHONE"), Segment("まで")],
            [Segment("マイナンバー"), Segment(full_width(MY_NUMBER), "JP_MY_NUMBER")],
            [Segment("カード"), Segment(full_width(CARD), "CREDIT_CARD")],
        ],
        size=30,
    )
    judgement = judge_image(page.encode())
    assert_found_where_drawn(judgement, page)
    assert all(seeded.box[3] - seeded.box[1] > 3 * (seeded.box[2] - seeded.box[0]) for seeded in page.seeded)


def test_english_pii_is_found_where_it_was_drawn_in_a_jpeg(judge_image):
    page = horizontal(
        [
            [Segment("Call us at "), Segment("(415) 555-2671", "PHONE")],
            [Segment("Card number: "), Segment(card(RND, "-"), "CREDIT_CARD")],
            [Segment("Email: "), Segment(email(RND), "EMAIL")],
            [Segment("My Number: "), Segment(my_number(RND), "JP_MY_NUMBER")],
        ],
        size=26,
    )
    assert_found_where_drawn(judge_image(page.encode("JPEG", quality=85), "page.jpg"), page)


@pytest.mark.parametrize(
    "page",
    [
        lambda: horizontal(
            [
                [Segment("2024年5月17日 10:30 開始 合計金額 ¥12,800（税込）")],
                # a postal code's shape without its 〒 (with it, it is a low-severity JP_POSTAL_CODE)
                [Segment("注文番号 20240517-0012 100-0001 東京都千代田区")],
                [Segment("追跡番号 1234 5678 9012 3450 管理番号 4820 1375 9902")],
            ]
        ),
        lambda: vertical(
            [[Segment("本日の会議資料を共有します")], [Segment("注文番号２０２４０５１７－００１２")]],
            size=30,
        ),
        lambda: horizontal(
            [[Segment("Invoice 2024-05-17, total $1,280.00")], [Segment("Tracking 1234 5678 9012 3450")]]
        ),
    ],
    ids=["japanese", "vertical", "english"],
)
def test_pages_without_pii_are_clean_not_unscanned(judge_image, page):
    judgement = judge_image(page().encode())
    assert judgement.verdict.kind == "clean", judgement.verdict
    assert content_views(judgement) == ["ocr:tesseract"]


def test_boxes_are_in_original_pixels_when_the_image_was_downscaled_for_ocr(judge_image):
    page = horizontal([[Segment("電話 "), Segment(PHONE_JA, "PHONE")]], size=56)
    judgement = judge_image(page.encode(), max_side=page.image.width // 2)
    assert_found_where_drawn(judgement, page)


def test_exif_orientation_is_applied_and_boxes_are_upright(judge_image):
    page = horizontal([[Segment("Call us at "), Segment("(415) 555-2671", "PHONE")]], size=28)
    stored = page.image.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    stored.convert("RGB").save(out, format="JPEG", quality=95, exif=exif.tobytes())
    assert_found_where_drawn(judge_image(out.getvalue(), "sideways.jpg"), page)


def test_every_page_of_a_tiff_is_read_up_to_max_frames(judge_image):
    cover = horizontal([[Segment("本日の会議資料を共有します")]])
    second = horizontal([[Segment("マイナンバー "), Segment(MY_NUMBER, "JP_MY_NUMBER")]])
    out = io.BytesIO()
    cover.image.save(out, format="TIFF", save_all=True, append_images=[second.image])
    (finding,) = judge_image(out.getvalue(), "fax.tiff").verdict.findings
    assert finding.type == "JP_MY_NUMBER" and finding.location.view == "ocr:tesseract:frame1"
    assert overlap(finding.location.bbox, second.seeded[0].box) > 0.8
    only_cover = judge_image(out.getvalue(), "fax.tiff", max_frames=1)
    assert only_cover.verdict.kind == "unscanned" and content_views(only_cover) == ["ocr:tesseract"]
    assert (
        only_cover.verdict.reason
        == "extractor ocr-tesseract: too_large (2 frames, only ocr.max_frames=1 read)"
    )


def test_scan_reports_the_bounding_box_in_json(write_config, tmp_path, ocr_ready):
    page = horizontal([[Segment("お問い合わせは電話 "), Segment(PHONE_JA, "PHONE"), Segment(" まで")]])
    target = tmp_path / "memo.png"
    target.write_bytes(page.encode())
    result = run_cli("scan", "--format", "json", "--config", str(write_config()), str(target))
    assert result.returncode == 1, result.stderr
    (record,) = json.loads(result.stdout)["files"]
    (finding,) = record["findings"]
    assert finding["type"] == "PHONE" and finding["location"]["view"] == "ocr:tesseract"
    assert overlap(finding["location"]["bbox"], page.seeded[0].box) > 0.8
    assert PHONE_JA not in result.stdout


def test_the_daemon_quarantines_an_image_with_pii_and_audits_its_box(tmp_path, ocr_ready):
    inbox, audit = tmp_path / "inbox", tmp_path / "audit.jsonl"
    inbox.mkdir()
    config = tmp_path / "dropwarden.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n[audit]\npath = "{audit}"\n[metrics]\nlisten = ""\n'
        f'[ocr]\nenabled = true\n[[watch]]\npath = "{inbox}"\nquarantine_dir = "{tmp_path / "q"}"\n'
    )
    page = horizontal([[Segment("カード番号 "), Segment(CARD, "CREDIT_CARD")]])
    daemon = DaemonProcess(config, audit).start()
    try:
        staged = tmp_path / "scan.png"
        staged.write_bytes(page.encode())
        staged.rename(inbox / "scan.png")
        (decision,) = daemon.wait_for(lambda: daemon.decisions_for("scan.png"), what="decision")
    finally:
        daemon.stop()
    assert decision["verdict"] == "finding" and [a["op"] for a in decision["actions"]] == ["quarantine"]
    (finding,) = decision["findings"]
    assert finding["type"] == "CREDIT_CARD" and finding["location"]["view"] == "ocr:tesseract"
    assert overlap(finding["location"]["bbox"], page.seeded[0].box) > 0.8
    assert not (inbox / "scan.png").exists()
    digits = "".join(ch for ch in CARD if ch.isdigit())
    written = audit.read_text() + "\n".join(daemon.log_lines)
    assert CARD not in written and digits not in written  # what OCR read is never written down


# ------------------------------------------------------------------------------------ bounded and hostile


def png_with_header_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR claims another size (CRC fixed): what a bomb's header says."""
    data = bytearray(horizontal([[Segment("x")]]).encode())
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def tesseract_children() -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if "(tesseract)" in stat and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                out.append(int(entry.name))
    return out


@pytest.mark.parametrize(
    ("data", "reason", "detail"),
    [
        (png_with_header_size(100_000, 100_000), "too_large", "decompression bomb"),
        (png_with_header_size(9000, 9000), "too_large", "ocr.max_pixels"),
        (b"\x89PNG\r\n\x1a\n" + os.urandom(200), "decode_error", "not a readable image"),
    ],
    ids=["bomb", "over-max-pixels", "garbage"],
)
def test_hostile_images_are_unscanned_with_the_reason_and_never_reach_tesseract(
    judge_image, data, reason, detail
):
    started = time.monotonic()
    verdict = judge_image(data, max_pixels=20_000_000).verdict
    assert time.monotonic() - started < 2
    assert verdict.kind == "unscanned"
    (problem,) = verdict.problems
    assert (
        problem.reason == reason and detail in problem.detail and problem.source == "extractor ocr-tesseract"
    )


def test_a_truncated_png_is_unscanned_as_a_decode_error(judge_image):
    data = horizontal([[Segment("電話 "), Segment(PHONE_JA, "PHONE")]]).encode()
    (problem,) = judge_image(data[: len(data) // 2]).verdict.problems
    assert problem.reason == "decode_error" and "truncated" in problem.detail


def test_a_huge_but_legal_image_is_downscaled_and_judged_in_bounded_time(judge_image):
    wide = Image.new("L", (30000, 40), 255)
    out = io.BytesIO()
    wide.save(out, format="PNG")
    started = time.monotonic()
    verdict = judge_image(out.getvalue()).verdict
    assert verdict.kind == "clean" and time.monotonic() - started < 10


def test_a_page_past_the_timeout_is_unscanned_and_tesseract_is_killed(judge_image):
    page = horizontal([[Segment("マイナンバー "), Segment(MY_NUMBER, "JP_MY_NUMBER")]] * 6)
    started = time.monotonic()
    verdict = judge_image(page.encode(), timeout=0.2).verdict
    assert time.monotonic() - started < 2
    (problem,) = verdict.problems
    assert verdict.kind == "unscanned" and problem.reason == "timeout" and "within 0.2s" in problem.detail
    assert tesseract_children() == []


def test_tesseract_over_its_memory_limit_is_a_detector_error(judge_image):
    page = horizontal([[Segment("マイナンバー "), Segment(MY_NUMBER, "JP_MY_NUMBER")]])
    verdict = judge_image(page.encode(), tesseract={"max_memory_mib": 128}).verdict  # it needs ~200
    (problem,) = verdict.problems
    assert verdict.kind == "unscanned" and problem.reason == "detector_error"
    assert "killed by SIGABRT (memory limit 128 MiB: ocr.tesseract.max_memory_mib)" in problem.detail


# ------------------------------------------------------------------------------ regions for MangaOCR


def test_the_region_finder_returns_one_box_per_text_block(ocr_ready):
    left = horizontal([[Segment("本日の会議資料")], [Segment("来週の予定")]], size=28)
    right = vertical([[Segment("お問い合わせ")], [Segment("ありがとう")]], size=28)
    sheet = Image.new("L", (left.image.width + right.image.width + 200, 400), 255)
    sheet.paste(left.image, (0, 0))
    sheet.paste(right.image, (left.image.width + 200, 0))
    boxes = tesseract_regions(sheet, time.monotonic() + 20)
    assert len(boxes) >= 2
    for box in boxes:
        assert 0 <= box[0] < box[2] <= sheet.width and 0 <= box[1] < box[3] <= sheet.height
    assert any(box[2] <= left.image.width for box in boxes)
    assert any(box[0] >= left.image.width + 200 for box in boxes)
    with pytest.raises(OcrError) as raised:
        tesseract_regions(sheet, time.monotonic() - 1)
    assert raised.value.reason == "timeout"


# ----------------------------------------------------------------------------- configuration, doctor


def test_auto_enables_ocr_only_where_tesseract_is_installed(tmp_path):
    absent = Settings(state={"dir": tmp_path}, ocr={"tesseract": {"binary": "no-such-tesseract"}})
    runtime = build_runtime(absent)
    assert "ocr-tesseract" not in runtime.registry.extractors
    assert not [e for e in runtime.plugins.errors if e.name == "ocr"]
    runtime.close()
    required = Settings(
        state={"dir": tmp_path}, ocr={"enabled": True, "tesseract": {"binary": "no-such-tesseract"}}
    )
    runtime = build_runtime(required)
    (error,) = [e for e in runtime.plugins.errors if e.name == "ocr"]
    assert error.setting is not None and error.setting.loc == ("ocr", "enabled")
    assert "apt install tesseract-ocr" in error.setting.message
    runtime.close()
    if shutil.which("tesseract") and tesseract_ready():
        runtime = build_runtime(Settings(state={"dir": tmp_path}))
        assert [e for e in runtime.registry.extractors if e.startswith("ocr")] == ["ocr-tesseract"]
        runtime.close()


def test_doctor_reports_tesseract_or_says_ocr_is_disabled(write_config):
    missing = run_cli(
        "doctor", "--config", str(write_config('[ocr.tesseract]\nbinary = "no-such-tesseract"\n'))
    )
    assert "warn  ocr tesseract: " in missing.stdout
    assert "(apt install tesseract-ocr tesseract-ocr-jpn" in missing.stdout
    assert "OCR disabled" in missing.stdout and missing.returncode == 0
    if tesseract_ready():
        found = run_cli("doctor", "--config", str(write_config()))
        assert "ok    ocr tesseract: tesseract 5." in found.stdout
        assert "ok    ocr languages: jpn+jpn_vert+eng installed" in found.stdout
        assert "ok    ocr test image: read in" in found.stdout
        manga = run_cli(
            "doctor",
            "--config",
            str(
                write_config(
                    '[ocr]\nengines = ["tesseract", "mangaocr"]\n[ocr.mangaocr]\nmodel = "/no/model"\n'
                )
            ),
        )
        assert "FAIL  ocr mangaocr: " in manga.stdout and manga.returncode == 1, manga.stdout
    required = run_cli(
        "doctor",
        "--config",
        str(write_config('[ocr]\nenabled = true\n[ocr.tesseract]\nbinary = "no-such-tesseract"\n')),
    )
    assert "FAIL  ocr tesseract: " in required.stdout and required.returncode == 1


# ------------------------------------------------------------------------------- the core's contract


class _Failing:
    id, version, view_kinds = "failing", "1", frozenset({"image"})

    def __init__(self, error: Exception | None = None, sleep: float = 0) -> None:
        self.error, self.sleep, self.calls = error, sleep, 0

    def extract(self, snapshot, views):
        self.calls += 1
        time.sleep(self.sleep)
        if self.error:
            raise self.error
        return []


def _snapshot(tmp_path: Path, data: bytes):
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return take_snapshot(fd, "f", display_path="f", max_size=10**8)
    finally:
        os.close(fd)


def test_extractor_failures_and_timeouts_are_problems_and_reasons_are_kept(tmp_path):
    image = _snapshot(tmp_path, horizontal([[Segment("x")]]).encode())
    runner = DetectorRunner(timeout=0.2)
    try:
        cases = [
            (_Failing(OcrError("too_large", "too big")), "too_large", "too big"),
            (_Failing(ValueError("boom")), "detector_error", "ValueError: boom"),
            (_Failing(sleep=1), "timeout", "no answer within 0.2s"),
        ]
        for extractor, reason, detail in cases:
            (problem,) = extract_views(image, [extractor], runner).problems
            assert (problem.reason, problem.detail, problem.source) == (reason, detail, "extractor failing")
        text = _snapshot(tmp_path, b"hello\n")
        skipped = _Failing(ValueError("never called"))
        assert extract_views(text, [skipped], runner).problems == [] and skipped.calls == 0
    finally:
        runner.close()
