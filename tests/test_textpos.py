"""The regex detector's offset arithmetic: the C extension counts exactly what the Python fallback counts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dropwarden_regex import textpos
from tests.conftest import require

# every width of character: ASCII, Latin-1, the BMP (kana, full-width forms), astral, a lone surrogate
_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from("a\n\r 0é\u00ffア０\n\n\ufeff\U0001f600\udc80"),
        st.characters(codec="utf-8"),
        st.characters(),
    ),
    max_size=400,
)


def extension():
    require(textpos.ACCELERATED, "the C extension dropwarden_regex._textpos (built by `pip install -e .`)")
    from dropwarden_regex import _textpos

    return _textpos


@given(text=_TEXT, bounds=st.tuples(st.integers(0, 420), st.integers(0, 420)))
def test_characters_counted_in_c_equal_the_decoded_length(text, bounds):
    c = extension()
    data = text.encode("utf-8", "surrogatepass")
    first, last = sorted(min(bound, len(text)) for bound in bounds)
    start = len(text[:first].encode("utf-8", "surrogatepass"))
    end = len(text[:last].encode("utf-8", "surrogatepass"))
    assert c.utf8_char_count(data, start, end) == textpos._utf8_char_count(data, start, end) == last - first


@given(text=_TEXT, start=st.integers(0, 450), end=st.integers(0, 450), as_bytes=st.booleans())
def test_newlines_counted_in_c_equal_str_count(text, start, end, as_bytes):
    c = extension()
    subject = text.encode("utf-8", "surrogatepass") if as_bytes else text
    assert c.newline_count(subject, start, end) == textpos._newline_count(subject, start, end)


@pytest.mark.parametrize("unit", ["a", "é", "ア", "\U0001f600"])
def test_long_ranges_cross_every_block_of_the_counting_loops(unit):
    """Past 255 words of eight bytes and past 65535 16-bit units the loops empty their lane sums."""
    c = extension()
    text = ("\n" + unit * 7) * 20_000 + unit * 5
    data = text.encode()
    for start, end in ((0, len(text)), (3, len(text) - 2), (1, 70_001)):
        assert c.newline_count(text, start, end) == text.count("\n", start, end)
        byte_start, byte_end = len(text[:start].encode()), len(text[:end].encode())
        assert c.utf8_char_count(data, byte_start, byte_end) == end - start
    assert c.newline_count(data, 0, len(data)) == data.count(b"\n") == 20_000


def test_every_byte_and_code_unit_value_is_counted_as_count_counts_it():
    """The eight-lane compare must match '\n' alone: no other byte (0x8A, 0x0B, ...) and no other unit."""
    c = extension()
    every_byte = bytes(range(256)) * 9
    for subject in (every_byte, every_byte.decode("latin-1"), "".join(map(chr, range(0x0, 0x800))) * 3):
        for start in range(17):
            assert c.newline_count(subject, start, len(subject)) == textpos._newline_count(
                subject, start, len(subject)
            )
    all_leads = "".join(chr(cp) for cp in (*range(0x80), *range(0x80, 0x800, 7), *range(0x800, 0x10000, 301)))
    data = all_leads.encode("utf-8", "surrogatepass")
    assert c.utf8_char_count(data, 0, len(data)) == len(all_leads)


def test_a_negative_offset_or_a_wrong_type_is_refused():
    c = extension()
    with pytest.raises(ValueError):
        c.utf8_char_count(b"abc", -1, 2)
    with pytest.raises(ValueError):
        c.newline_count("a\nb", 0, -1)
    with pytest.raises(TypeError):
        c.utf8_char_count("abc", 0, 2)
    with pytest.raises(TypeError):
        c.newline_count(["a"], 0, 1)


def test_the_detector_uses_the_extension_where_it_was_built_and_python_for_other_buffers():
    c = extension()
    assert textpos.utf8_char_count is not textpos._utf8_char_count
    data = "a\nアé\n".encode()
    assert textpos.utf8_char_count(data, 0, len(data)) == c.utf8_char_count(data, 0, len(data)) == 5
    assert textpos.utf8_char_count(bytearray(data), 1, len(data)) == 4  # not bytes: the fallback
    assert textpos.newline_count(bytearray(data), 0, len(data)) == 2


def test_findings_are_the_same_whichever_arithmetic_the_detector_runs(monkeypatch):
    """Lines, columns and offsets of every finding, on text with Japanese lines among the values."""
    extension()
    from dropwarden.redact import Fingerprinter
    from dropwarden.registry import DetectContext
    from dropwarden.views import TextView
    from dropwarden_regex import RegexDetector, detector, spans
    from dropwarden_regex.settings import RulesSettings
    from tests.test_regex_engine import seeded_corpus

    text = "\n".join(
        f"{line} 口座番号の確認をお願いします。\n連絡先：０９０ー１２３４ー５６７８" if i % 3 == 0 else line
        for i, line in enumerate(seeded_corpus(11, 60_000).splitlines())
    )
    ctx = DetectContext(Fingerprinter(b"k" * 32), "/srv/drop/x.txt")
    view = TextView(name="text", text=text, encoding="utf-8")
    with_c = RegexDetector(RulesSettings()).detect(view, ctx)
    monkeypatch.setattr(spans, "utf8_char_count", textpos._utf8_char_count)
    monkeypatch.setattr(detector, "newline_count", textpos._newline_count)
    with_python = RegexDetector(RulesSettings()).detect(view, ctx)
    assert len(with_c) > 100 and max(f.location.line for f in with_c) > 500
    assert with_c == with_python


def test_without_the_extension_the_python_arithmetic_is_chosen(monkeypatch):
    """An install that could not compile `_textpos` imports textpos all the same, and counts in Python."""
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "dropwarden_regex._textpos", None)  # import fails as if never built
    try:
        fallback = importlib.reload(textpos)
        assert fallback.ACCELERATED is False
        assert fallback.utf8_char_count is fallback._utf8_char_count
        assert fallback.newline_count is fallback._newline_count
        data = "x\nア\n".encode()
        assert fallback.utf8_char_count(data, 0, len(data)) == 4
        assert fallback.newline_count("x\nア\n", 0, 4) == 2
    finally:
        monkeypatch.undo()
        importlib.reload(textpos)


def test_lines_and_columns_of_findings_are_where_they_stand_in_ascii_and_in_other_text():
    """An ASCII view (bytes read as text) counts its lines in its bytes; any other view in its text."""
    from dropwarden.redact import Fingerprinter
    from dropwarden.registry import DetectContext
    from dropwarden.views import TextView
    from dropwarden_regex import RegexDetector
    from dropwarden_regex.settings import RulesSettings
    from tests.test_regex_engine import seeded_corpus

    ascii_text = "".join(line for line in seeded_corpus(5, 40_000).splitlines(True) if line.isascii())
    japanese = "".join(f"報告{line}" for line in ascii_text.splitlines(True))  # bytes and characters differ
    ctx = DetectContext(Fingerprinter(b"k" * 32), "/srv/drop/x.txt")
    detector = RegexDetector(RulesSettings())
    views = [
        (ascii_text, TextView.from_ascii("text", ascii_text.encode())),
        (ascii_text, TextView(name="text", text=ascii_text, encoding="utf-8")),
        (japanese, TextView(name="text", text=japanese, encoding="utf-8")),
    ]
    for text, view in views:
        findings = detector.detect(view, ctx)
        assert len(findings) > 20 and max(f.location.line for f in findings) > 100
        for finding in findings:
            offset = finding.location.offset
            assert finding.location.line == text.count("\n", 0, offset) + 1
            assert finding.location.column == offset - (text.rfind("\n", 0, offset) + 1) + 1
