"""A worksheet read by pattern (the fast path) must say exactly what the element callbacks say."""

from __future__ import annotations

import pytest

from dropwarden_documents.ooxml import SheetCells
from dropwarden_documents.sheetscan import fits, scan_cells
from dropwarden_documents.xmltext import parse

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
SHARED = ["カード番号", "4111 1111 1111 1111", "clean"]
ROWS = (
    '<row r="1" spans="1:4"><c r="A1" t="s"><v>0</v></c><c r="B1" s="2" t="s"><v>1</v></c>'
    '<c r="C1" t="n"><v>4.111111111111111E+15</v></c><c r="D1"><f>SUM(A1:A2)</f><v>6</v></c></row>'
    '<row r="3"><c r="A3" t="inlineStr"><is><t>東京 本社</t></is></c>'
    '<c r="B3" t="inlineStr"><is><r><t xml:space="preserve">rich </t></r><r><t>run</t></r></is></c>'
    "<c r='C3' t='str'><v>single &amp; quoted &#x41;&#66;</v></c><c r=\"D3\" s=\"1\"/></row>"
    '<row><c t="s"><v>2</v></c><c><v> 42 </v></c><c t="b"><v>1</v></c></row>'
    '<row r="9"/><row r="10"><c r="A10" t="s"><v>99</v></c><c r="B10" t="e"><v>#N/A</v></c></row>'
)


def both(xml: str) -> tuple[tuple[str, list], tuple[str, list]]:
    data = xml.encode()
    target = parse(data, SheetCells(10**6, SHARED))
    return scan_cells(data, SHARED, 10**6), (target.text(), target.anchors)


@pytest.mark.parametrize("prefix", ["", "x:"])
def test_the_pattern_reader_and_the_callbacks_read_the_same_text_and_cells(prefix):
    """Shared, inline and rich strings, numbers in E notation, formulas, entities, single quotes,
    rows without a number, empty and self-closed cells: the same text, the same anchors."""
    rows = ROWS.replace("<row", f"<{prefix}row").replace("</row", f"</{prefix}row")
    for name in ("c", "v", "t", "f", "is", "r"):
        rows = rows.replace(f"<{name} ", f"<{prefix}{name} ").replace(f"<{name}>", f"<{prefix}{name}>")
        rows = rows.replace(f"</{name}>", f"</{prefix}{name}>")
    declaration = f'xmlns:x="{MAIN}"' if prefix else f'xmlns="{MAIN}"'
    xml = f'<?xml version="1.0" encoding="UTF-8"?><{prefix}worksheet {declaration}><{prefix}sheetData>{rows}'
    xml += f"</{prefix}sheetData></{prefix}worksheet>"
    assert fits(xml.encode())
    fast, slow = both(xml)
    assert fast[0] == slow[0] and list(fast[1]) == slow[1]
    assert "4111111111111111" in fast[0] and "カード番号" in fast[0] and "single & quoted AB" in fast[0]
    assert (fast[0].index("東京"), fast[0].index("東京") + 5, "cell A3") in fast[1]


def test_a_sheet_of_many_slices_reads_the_same_as_through_the_callbacks():
    """Over a MB of rows (read a slice of rows at a time): the same text and cells, in order."""
    rows = "".join(
        f'<row r="{n}"><c r="A{n}" t="s"><v>{n % 3}</v></c><c r="B{n}"><v>{n}.5E+3</v></c></row>'
        for n in range(1, 30_000)
    )
    xml = f'<worksheet xmlns="{MAIN}"><sheetData>{rows}</sheetData></worksheet>'
    assert len(xml) > 2 * 1024 * 1024 and fits(xml.encode())
    (fast_text, fast_anchors), (slow_text, slow_anchors) = both(xml)
    # one cell's anchor as a finding looks it up (its slice's labels only), then all of them
    picked = [*range(0, len(slow_anchors), 997), len(slow_anchors) - 1]
    assert [fast_anchors[i] for i in picked] == [slow_anchors[i] for i in picked]
    assert fast_text == slow_text and list(fast_anchors) == slow_anchors
    assert fast_anchors[-1] == slow_anchors[-1] and fast_anchors[-1][2] == "cell B29999"


def test_xml_the_patterns_cannot_vouch_for_goes_to_the_callbacks():
    """A comment, a CDATA section, a DTD or another encoding: not read by pattern."""
    body = f'<worksheet xmlns="{MAIN}"><sheetData>{ROWS}</sheetData></worksheet>'
    assert fits(body.encode())
    assert not fits(body.replace("<sheetData>", "<sheetData><!-- <c r='Z1'><v>1</v></c> -->").encode())
    assert not fits(body.replace("<v>6</v>", "<v><![CDATA[6]]></v>").encode())
    assert not fits(('<?xml version="1.0" encoding="Shift_JIS"?>' + body).encode("shift_jis"))
    assert not fits(body.encode("utf-16"))


def test_rows_of_every_shape_around_common_cells_read_the_same_as_through_the_callbacks():
    """A row's start and end caught with its first and last common cell, next to rows that close
    themselves, rows with attributes as Excel writes them, a cell of an unusual shape first or last in
    a row, cells without a reference after common ones (their column counted), a cell outside any row,
    empty cells last in a row, and shared-string indexes in other digits: the same text and cells."""
    rows = (
        '<row r="1" spans="1:3" x14ac:dyDescent="0.25"><c r="A1" t="s"><v>0</v></c>'
        '<c r="B1" s="1" t="s"><v>1</v></c></row>'
        '<row r="2"><c r="A2" cm="1"><v>7</v></c><c r="B2"><v>8</v></c><c><v>9</v></c></row>'
        '<row r="3"/><row r="4"><c r="A4"><v>1</v></c><c r="B4" t="s"><v>²</v></c><c r="C4" s="3"/></row>'
        '<row r="5"><c r="A5" t="str"><v>x</v></c><c r="B5" t="s"><v>٢</v></c><c><v>5150</v></c></row>'
        '<c r="Z9"><v>outside</v></c><row r="6"></row>'
        '<row r="7"><c r="A7"><v>5</v></c><c r="B7" t="inlineStr"><is><t xml:space="preserve"> sp </t></is></c>'
        "</row><row><c><v>10</v></c></row>"
    )
    xml = f'<worksheet xmlns="{MAIN}" xmlns:x14ac="urn:x14ac"><sheetData>{rows}</sheetData></worksheet>'
    assert fits(xml.encode())
    fast, slow = both(xml)
    assert fast[0] == slow[0] and list(fast[1]) == slow[1]
    assert "clean" in fast[0] and (fast[0].index("9"), fast[0].index("9") + 1, "cell C2") in fast[1]
    assert (fast[0].index("5150"), fast[0].index("5150") + 4, "cell C5") in fast[1]
