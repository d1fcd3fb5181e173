"""OCR text before matching: normalisation, Tesseract's words joined into lines, boxes carried to findings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dropwarden.findings import Finding, Location, Severity
from dropwarden.judge.detect import locate
from dropwarden.views import TextView
from dropwarden_ocr.normalize import normalize
from dropwarden_ocr.tesseract import Word, lines_to_regions, parse_tsv
from dropwarden_regex import RegexDetector


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        ("０９０－１２３４－５６７８", "090-1234-5678"),  # full-width digits and hyphen
        ("090ー1234ー5678", "090-1234-5678"),  # the long-vowel mark read for a hyphen
        ("090一1234一5678", "090-1234-5678"),  # the kanji for "one" read for a hyphen
        ("090 － 1234 — 5678", "090-1234-5678"),  # spaces around dashes
        ("5559-1756—-1415-0252", "5559-1756-1415-0252"),  # a doubled dash
        ("0 9 0-1 234-5678", "090-1234-5678"),  # lone digits split off by OCR
        ("マイナンバー １２３４　５６７８　９０１８", "マイナンバー 1234 5678 9018"),  # groups stay groups
        ("4111  1111 1111 1111", "4111 1111 1111 1111"),
        ("〇9〇-1234-5678", "090-1234-5678"),  # ideographic zero beside digits
        ("O3-1234-5678", "03-1234-5678"),  # a letter O starting a digit run
        ("TEL090-1234-5678", "TEL 090-1234-5678"),  # a label run into its number
        ("TELO3-1234-5678", "TEL 03-1234-5678"),
        ("ﾏｲﾅﾝﾊﾞｰ", "マイナンバー"),  # half-width katakana with voicing marks
        ("マイナンバ-", "マイナンバー"),  # a hyphen after katakana is the long-vowel mark
        ("ｔａｒｏ＠ｅｘａｍｐｌｅ．ｃｏ．ｊｐ", "taro@example.co.jp"),
        ("yamada_ taro@mail. example. jp", "yamada_taro@mail.example.jp"),  # spaces inside an address
        ("（０３）１２３４－５６７８", "(03)1234-5678"),
        # left alone: prose, dates, ranges, words with O, katakana words
        ("Contact bob@example.com today", "Contact bob@example.com today"),
        ("2024-05-17 10:30", "2024-05-17 10:30"),
        ("10〜20個", "10〜20個"),  # a wave dash is a range, not a hyphen
        ("SO2 and Oslo 2", "SO2 and Oslo 2"),
        ("HOTEL0120", "HOTEL0120"),
        ("ピース一個", "ピース一個"),
    ],
)
def test_ocr_text_is_normalised_for_the_rules(read, expected):
    assert normalize(read).text == expected


def test_a_vertical_bar_between_digits_is_a_hyphen_only_in_vertical_text():
    assert normalize("090|1234|5678", vertical=True).text == "090-1234-5678"
    assert normalize("090|1234|5678").text == "090|1234|5678"


def test_an_upright_hyphen_read_as_dash_and_underscore_in_a_column_is_one_hyphen():
    """Tesseract's vertical model reads an upright hyphen in a bubble as "-_-" or "-_" at times."""
    assert normalize("3530-3682-_-9401-_3960", vertical=True).text == "3530-3682-9401-3960"
    assert normalize("yamada_taro@example.com", vertical=True).text == "yamada_taro@example.com"


@given(st.text(alphabet="０１９ 0129-ー一〇Oo|　ﾊﾞｰマイナンバ@.　abcTEL_\n", max_size=40))
def test_every_normalised_character_maps_back_to_the_character_it_came_from(text):
    normal = normalize(text, vertical=True)
    assert len(normal.origin) == len(normal.text)
    assert list(normal.origin) == sorted(normal.origin)
    assert all(0 <= o < len(text) for o in normal.origin)
    first, last = normal.span(0, len(text))
    assert (first, last) == (0, len(normal.text))


def _words(line: list[tuple[str, tuple[int, int, int, int]]], line_no: int = 1) -> list[Word]:
    return [Word(1, 1, line_no, box, 95.0, text) for text, box in line]


def test_japanese_words_join_without_spaces_and_latin_words_keep_theirs():
    words = _words(
        [
            ("マイ", (0, 0, 50, 25)),
            ("ナン", (55, 0, 105, 25)),
            ("バー", (110, 0, 160, 25)),
            ("1234", (170, 2, 230, 24)),
            ("5678", (240, 2, 300, 24)),
            ("taro@example.", (320, 2, 480, 24)),
            ("co.jp", (481, 2, 530, 24)),
        ]
    )
    (region,) = lines_to_regions(words)
    assert region.text == "マイナンバー1234 5678 taro@example.co.jp"
    assert region.bbox == (0, 0, 530, 25) and not region.vertical
    assert [region.text[s:e] for s, e, _ in region.parts] == [w.text for w in words]


def test_a_column_of_words_going_down_is_a_vertical_line():
    words = _words([("電話", (100, 0, 126, 60)), ("090-1234-5678", (100, 70, 126, 400))])
    (region,) = lines_to_regions(words)
    assert region.vertical and region.text == "電話090-1234-5678"


def test_low_confidence_words_are_dropped_when_asked():
    words = [Word(1, 1, 1, (0, 0, 10, 10), 20.0, "x"), Word(1, 1, 1, (20, 0, 30, 10), 90.0, "y")]
    assert lines_to_regions(words)[0].text == "x y"
    assert lines_to_regions(words, min_confidence=0.5)[0].text == "y"


def test_tsv_rows_become_words_and_layout_boxes():
    tsv = (
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
        "1\t1\t0\t0\t0\t0\t0\t0\t200\t100\t-1\t\n"
        "2\t1\t1\t0\t0\t0\t10\t10\t100\t30\t-1\t\n"
        "3\t1\t1\t1\t0\t0\t10\t10\t100\t30\t-1\t\n"
        "4\t1\t1\t1\t1\t0\t10\t10\t100\t30\t-1\t\n"
        "5\t1\t1\t1\t1\t1\t10\t10\t40\t30\t96.5\t電話\n"
        "5\t1\t1\t1\t1\t2\t60\t10\t50\t30\t91.0\t \n"
    )
    parsed = parse_tsv(tsv)
    assert parsed.words == [Word(1, 1, 1, (10, 10, 50, 40), 96.5, "電話")]
    assert parsed.layout[2] == [((1,), (10, 10, 110, 40))]


def _finding(offset: int, length: int) -> Finding:
    location = Location(view="ocr:tesseract", line=1, column=offset + 1, offset=offset, length=length)
    return Finding("PHONE", "r", "regex", "1", Severity.MEDIUM, 0.7, location, "x", "f")


def test_a_finding_gets_the_union_of_the_word_boxes_its_match_overlaps():
    provenance = {
        "bbox": (0, 0, 500, 100),
        "boxes": ((0, 2, (0, 0, 40, 20)), (2, 15, (50, 0, 200, 20)), (16, 20, (0, 50, 90, 70))),
    }
    view = TextView("ocr:tesseract", "電話090-1234-5678\nまでです", "utf-8", provenance)
    assert locate(_finding(2, 13), view).location.bbox == (50, 0, 200, 20)
    assert locate(_finding(0, 15), view).location.bbox == (0, 0, 200, 20)
    assert locate(_finding(10, 8), view).location.bbox == (0, 0, 200, 70)
    no_offset = Finding("X", "r", "d", "1", Severity.LOW, 1.0, Location(view="ocr:tesseract"), "", "")
    assert locate(no_offset, view).location.bbox == (0, 0, 500, 100)


def test_the_regex_rules_find_normalised_ocr_text():
    text = "\n".join(
        normalize(line).text
        for line in [
            "電話０９０ー１２３４ー５６７８まで",
            "マイナンバー 1 234 5678 9018",
            "ｔａｒｏ＠ｅｘａｍｐｌｅ．ｃｏ．ｊｐ",
        ]
    )
    detector = RegexDetector()
    from dropwarden.registry import DetectContext

    findings = detector.detect(TextView("ocr:tesseract", text, "utf-8"), DetectContext(lambda t, v: "fp"))
    assert sorted(f.type for f in findings) == ["EMAIL", "JP_MY_NUMBER", "PHONE"]
