"""Fuzzing the documents extractor: a damaged document of every format it reads ends in a declared outcome.

Each seed is a real document made at test time (a card number inside). Hypothesis damages it (byte flips,
truncation, splices of its own bytes or of random ones) and the real judge (the documents extractor in its
parser workers, the rule packs) judges the result. What must hold whatever the damage: judging returns a
verdict; a problem carries a known Reason and is never a parser crash, a hang or an exception its parser
does not declare (`cannot be parsed (KeyError)` is a bug, `cannot be parsed (BadZipFile)` is damage).

Examples per format: a few by default (the file stays well under a minute); for a long run

    DROPWARDEN_FUZZ_EXAMPLES=2000 .venv/bin/pytest -q tests/test_documents_fuzz.py --timeout=0
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import re
import tarfile
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import openpyxl
import pptx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropwarden.judge.intake import FileIdentity, Snapshot
from dropwarden.verdict import Reason

from .ole_writer import compressed_rtf
from .test_documents_archives import CARD, CLEAN, zip_of
from .test_documents_office import saved, word
from .test_documents_ole import outlook
from .test_documents_pdf import make_form_pdf, with_attachment
from .test_documents_text_formats import odf, rtf

EXAMPLES = int(__import__("os").environ.get("DROPWARDEN_FUZZ_EXAMPLES", "0")) or 25

# What the parsers the extractor uses declare for damaged input (zipfile, tarfile, gzip/bz2/lzma/zlib,
# expat through defusedxml, pdfium, codecs); anything else in a problem's detail is a bug.
DECLARED = {
    "BadZipFile",
    "LargeZipFile",
    "NotImplementedError",  # a zip member's compression method zipfile does not know
    "ReadError",
    "HeaderError",
    "CompressionError",
    "StreamError",
    "TarError",
    "EOFError",
    "OSError",
    "BadGzipFile",
    "error",  # zlib.error
    "LZMAError",
    "ParseError",
    "ExpatError",
    "DTDForbidden",
    "EntitiesForbidden",
    "ExternalReferenceForbidden",
    "PdfiumError",
    "UnicodeDecodeError",
    "DecodeError",  # dropwarden.content: bytes in no known text encoding
    "ValueError",  # zipfile: a local header offset that points before the file ("negative seek value")
}
_PARSED = re.compile(r"cannot be parsed \((\w+)\)")


# ------------------------------------------------------------------------------------------ seeds


def _xlsx() -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet["A1"], sheet["B2"] = "請求先", int(CARD.replace(" ", ""))
    book.create_sheet("Hidden").sheet_state = "hidden"
    return saved(book)


def _pptx() -> bytes:
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "四半期報告"
    slide.notes_slide.notes_text_frame.text = f"card {CARD}"
    return saved(deck)


def _tar_gz() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in {"note.txt": f"pay {CARD}\n".encode(), "memo.txt": CLEAN.encode()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue(), mtime=0)


def _eml() -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "総務部", "全員", "週次報告"
    mail.set_content(CLEAN)
    mail.add_alternative(f"<html><body><p>card {CARD}</p></body></html>", subtype="html")
    mail.add_attachment(zip_of({"note.txt": f"pay {CARD}\n"}), "application", "zip", filename="a.zip")
    return mail.as_bytes()


def _pdf() -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        form = make_form_pdf(Path(folder) / "form.pdf").read_bytes()
    return with_attachment(form, "note.txt", f"card {CARD}\n".encode())


SEEDS: dict[str, Callable[[], bytes]] = {
    "zip": lambda: zip_of({"inner.zip": zip_of({"note.txt": f"pay {CARD}\n"}), "memo.txt": CLEAN}),
    "tar.gz": _tar_gz,
    "docx": lambda: word(CLEAN, header=f"card {CARD}", comment="確認済み"),
    "xlsx": _xlsx,
    "pptx": _pptx,
    "odt": lambda: odf("text", f"<office:text><text:p>card {CARD}</text:p></office:text>"),
    "rtf": lambda: rtf(f"山田様 card {CARD}"),
    "html": lambda: f"<html><head><title>t</title></head><body><p>card {CARD}</p></body></html>".encode(),
    "eml": _eml,
    "pdf": _pdf,
    "msg (compressed rtf body)": lambda: outlook("", rtf_body=compressed_rtf(rtf(f"山田様 card {CARD}"))),
    "xml (utf-16)": lambda: f'<?xml version="1.0" encoding="UTF-16"?><顧客>{CARD}</顧客>'.encode("utf-16"),
}


@functools.cache
def seed(kind: str) -> bytes:
    return SEEDS[kind]()


# ------------------------------------------------------------------------------------------ damage


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` after one to four of: byte flips, a truncation, a splice of random bytes, a range of its
    own bytes copied elsewhere, a range cut out."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        size = max(len(out), 1)
        at = draw(st.integers(0, size - 1))
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "copy", "cut"]))
        if kind == "flip":
            for offset in range(draw(st.integers(1, 8))):
                if at + offset < len(out):
                    out[at + offset] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del out[at:]
        elif kind == "splice":
            out[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "copy":
            start = draw(st.integers(0, size - 1))
            out[at:at] = out[start : start + draw(st.integers(1, 512))]
        else:
            del out[at : at + draw(st.integers(1, 512))]
    return bytes(out)


# ------------------------------------------------------------------------------------------ judging


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from dropwarden.config import Settings
    from dropwarden.runtime import build_runtime

    built = build_runtime(Settings(state={"dir": tmp_path_factory.mktemp("state")}, ocr={"enabled": False}))
    yield built
    built.close()


def judge(runtime: Any, data: bytes) -> Any:
    identity = FileIdentity(1, 2, len(data), 3, 4)
    snapshot = Snapshot(
        "/drop/inbox/fuzz.bin", data, hashlib.sha256(data).hexdigest(), identity, 0o644, 0, 0, 1, 4
    )
    return runtime.judge.judge_snapshot(snapshot).verdict


def assert_declared_outcome(verdict: Any) -> None:
    """A verdict; clean only without problems; each problem a known Reason, none a crash, a hang or an
    undeclared exception of a parser."""
    assert verdict.kind.value in ("clean", "finding", "unscanned"), verdict
    if verdict.kind.value == "clean":
        assert not verdict.problems, verdict
    for problem in verdict.problems:
        assert isinstance(problem.reason, Reason), problem
        assert problem.reason not in (Reason.DETECTOR_ERROR, Reason.TIMEOUT), problem
        undeclared = set(_PARSED.findall(problem.detail)) - DECLARED
        assert not undeclared, problem


@pytest.mark.parametrize("kind", list(SEEDS))
def test_each_undamaged_seed_is_read_and_its_card_found(runtime: Any, kind: str) -> None:
    """The seeds are documents the extractor really takes apart: a card found inside, named by a place."""
    verdict = judge(runtime, seed(kind))
    assert verdict.kind.value == "finding", verdict
    assert any(f.location.within for f in verdict.findings if f.type == "CREDIT_CARD"), verdict.findings


@pytest.mark.parametrize("kind", list(SEEDS))
def test_a_damaged_document_gets_a_declared_outcome(runtime: Any, kind: str) -> None:
    """Whatever the damage, the judge answers; a problem is a known Reason, never a crash, hang or an
    exception its parser does not declare."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=damaged(seed(kind)))
    def check(data: bytes) -> None:
        assert_declared_outcome(judge(runtime, data))

    check()


def test_a_mail_whose_address_header_the_policy_cannot_parse_is_still_read_whole(runtime: Any) -> None:
    """Regression (found by fuzzing): an address group the email policy fails on (AttributeError) made
    the whole message `cannot be parsed`; its headers are now judged raw and its body still read."""
    data = f"From: 総務部\nTo: g:;@example.com\nSubject: s\n\npay {CARD}\n".encode()
    verdict = judge(runtime, data)
    assert verdict.kind.value == "finding" and not verdict.problems, verdict
    assert any(f.location.within == ("body",) for f in verdict.findings), verdict.findings
