"""Full-width digit folding: which views are folded, and what folding keeps."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from dropwarden_regex.fold import fold_digits, has_full_width_digits

_ANY_FULL_WIDTH_DIGIT = re.compile(rb"\xef\xbc[\x90-\x99]")

# text where EF bytes are common: full-width punctuation and letters, half-width katakana, a BOM
_EF_HEAVY = st.text(alphabet=st.sampled_from("（）：！Ａｚｱ\ufeff0a ー０９"), max_size=300)


@given(st.one_of(_EF_HEAVY.map(lambda t: t.encode()), st.binary(max_size=200)))
def test_the_check_agrees_with_a_search_for_any_full_width_digit(data):
    assert has_full_width_digits(data) == (_ANY_FULL_WIDTH_DIGIT.search(data) is not None)


def test_a_digit_after_many_full_width_forms_is_still_seen():
    assert has_full_width_digits(("（ｱ：" * 1000 + "５").encode())
    assert not has_full_width_digits(("（ｱ：" * 1000 + "5").encode())


def test_a_truncated_full_width_form_at_the_end_is_no_digit():
    assert not has_full_width_digits(b"abc\xef\xbc")
    assert not has_full_width_digits(b"abc\xef")


def test_folding_keeps_every_offset():
    text = "電話：０９０ー１２３４ー５６７８（自宅）＋８１"
    folded = fold_digits(text)
    assert folded == "電話：090-1234-5678（自宅）+81"
    assert len(folded) == len(text)
