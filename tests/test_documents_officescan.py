"""Office text read by pattern (a presentation's parts) must say exactly what the element callbacks say."""

from __future__ import annotations

import io
import zipfile
from xml.etree.ElementTree import ParseError

import pptx
import pytest

from dropwarden_documents.formats import walk
from dropwarden_documents.officescan import replay
from dropwarden_documents.ooxml import OfficeText
from dropwarden_documents.settings import DocumentsSettings
from dropwarden_documents.xmltext import parse

A = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
P = 'xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"'
# Runs, breaks and tabs inside and outside runs, a table (cells end with a tab), names that start like
# the ones read (txBody, tcPr, pPr, tbl), a kept element inside another and one that closes itself,
# a processing instruction holding what looks like a run, ">" and quotes in attributes and text, CR LF
# and a lone CR with a tag between it and the next line feed, references (a CR among them), an odd
# prefix for the same namespace, end tags with a space.
SHAPES = (
    f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><p:sld {A} {P} xmlns:q="{A[9:-1]}">'
    '<p:cSld><p:spTree><p:sp><p:nvSpPr><p:cNvPr id="2" name="a > b"/></p:nvSpPr><p:txBody>'
    '<a:bodyPr/><a:p><a:pPr lvl="1"/><a:r><a:rPr lang="ja-JP"/><a:t>カード 4111</a:t></a:r><a:tab/>'
    '<a:r><a:t xml:space="preserve"> 1111 &amp; &lt;x&gt; &#x41;&#66; "q" 1&gt;0 </a:t></a:r>'
    "<a:br/><a:r><a:t>after break</a:t ></a:r></a:p>"
    "<a:p><a:r><a:t>line\r\nnext\rcr\r<a:x/>\nlf&#13;ref</a:t></a:r><a:t/></a:p>"
    "<?hidden <a:t>not text</a:t> ?><q:p><q:r><q:t>odd prefix</q:t></q:r></q:p>"
    "<a:p><a:t>outer<a:t>inner</a:t><a:br/>tail<a:tab/>tabbed</a:t></a:p>"
    "<a:tbl><a:tr><a:tc><a:txBody><a:p><a:r><a:t>cell 1</a:t></a:r></a:p></a:txBody><a:tcPr/></a:tc>"
    "<a:tc><a:txBody><a:p><a:r><a:t>cell 2</a:t></a:r></a:p><a:p/></a:txBody></a:tc></a:tr></a:tbl>"
    "<a:p><a:fld type='slidenum'><a:t>7</a:t></a:fld><a:tab></a:tab><a:br></a:br></a:p>"
    "</p:txBody></p:sp></p:spTree></p:cSld><p:text>comment &#x263A;</p:text></p:sld>"
)


def both(data: bytes) -> tuple[str, str]:
    fast = OfficeText(10**6)
    assert replay(data, fast)
    return fast.text(), parse(data, OfficeText(10**6)).text()


def test_the_pattern_reader_and_the_callbacks_read_the_same_text():
    fast, slow = both(SHAPES.encode())
    assert fast == slow
    assert "カード 4111\t 1111 & <x> AB" in fast and "cell 1\tcell 2" in fast and "odd prefix" in fast
    assert "not text" not in fast and "line\nnext\ncr\n\nlf\rref" in fast


def test_every_part_of_a_generated_deck_reads_the_same_as_through_the_callbacks():
    deck = pptx.Presentation()
    for number in range(3):
        slide = deck.slides.add_slide(deck.slide_layouts[number + 1])
        slide.shapes.title.text = f"スライド {number} & <title>"
        slide.notes_slide.notes_text_frame.text = f"notes {number}\n4111 1111 1111 1111"
        table = slide.shapes.add_table(2, 2, 0, 0, 100, 100).table
        table.cell(1, 1).text = "東京 本社\tcell"
    out = io.BytesIO()
    deck.save(out)
    with zipfile.ZipFile(out) as archive:
        parts = [archive.read(name) for name in archive.namelist() if name.endswith(".xml")]
    assert len(parts) > 20
    for data in parts:
        fast, slow = both(data)
        assert fast == slow


def test_xml_the_pattern_cannot_vouch_for_goes_to_the_callbacks_and_damage_is_reported():
    """A comment, CDATA, a DTD, another encoding: not read by pattern (False, nothing fed: the callbacks
    then read or refuse it); damaged XML and an unbound prefix raise as through the callbacks."""
    body = SHAPES[SHAPES.index("?>") + 2 :]
    for odd in (
        SHAPES.replace("<p:cSld>", "<p:cSld><!-- <a:t>x</a:t> -->").encode(),
        SHAPES.replace("after break", "<![CDATA[after break]]>").encode(),
        ('<!DOCTYPE p:sld [<!ENTITY e "x">]>' + body).encode(),
        SHAPES.replace('encoding="UTF-8"', 'encoding="Shift_JIS"').encode("shift_jis", "replace"),
        body.encode("utf-16"),
    ):
        target = OfficeText(10**6)
        assert not replay(odd, target)
        assert target.parts == []
    with pytest.raises(ParseError):
        replay(SHAPES[: len(SHAPES) // 2].encode(), OfficeText(10**6))
    with pytest.raises(ParseError):
        replay(SHAPES.replace("<q:p>", "<z:p>").replace("</q:p>", "</z:p>").encode(), OfficeText(10**6))


def test_a_damaged_or_entity_laden_slide_leaves_the_deck_unscanned_with_the_other_slides_read():
    laughs = '<!DOCTYPE p:sld [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    for damage, reason in (
        (lambda data: data[:200], "ParseError"),
        (lambda data: laughs.encode() + data[55:], "DTDForbidden"),
    ):
        deck = pptx.Presentation()
        for text in ("first 4111", "second"):
            deck.slides.add_slide(deck.slide_layouts[1]).shapes.title.text = text
        source, out = io.BytesIO(), io.BytesIO()
        deck.save(source)
        with zipfile.ZipFile(source) as old, zipfile.ZipFile(out, "w") as new:
            for info in old.infolist():
                data = old.read(info)
                new.writestr(info, damage(data) if info.filename == "ppt/slides/slide2.xml" else data)
        outcome = walk(out.getvalue(), DocumentsSettings())
        assert [(why, where) for why, _, where in outcome.problems] == [
            ("decode_error", "ppt/slides/slide2.xml")
        ]
        assert reason in outcome.problems[0][1]
        assert "first 4111" in outcome.views[0][2] and "second" not in outcome.views[0][2]
