"""Japanese identifiers of the pii pack (driver's licence, passport, bank account, postal code), and
full-width digits read as their ASCII form by every rule."""

from __future__ import annotations

import pytest

from dropwarden.redact import Fingerprinter
from dropwarden.registry import DetectContext
from dropwarden.views import TextView
from dropwarden_regex import RegexDetector
from dropwarden_regex.fold import fold_digits
from dropwarden_regex.validators import jp_drivers_license, jp_licence_check_digit

DETECTOR = RegexDetector()
FULL_WIDTH = str.maketrans("0123456789-", "０１２３４５６７８９－")


def found(text: str) -> list[tuple[str, str]]:
    """(type, value as it stands in `text`) of every finding."""
    ctx = DetectContext(Fingerprinter(b"k" * 32), "/srv/drop/in/a.txt")
    findings = DETECTOR.detect(TextView(name="text", text=text, encoding="utf-8"), ctx)
    return [(f.type, text[f.location.offset : f.location.offset + f.location.length]) for f in findings]


def licence(first10: str, reissues: str = "0") -> str:
    return first10 + str(jp_licence_check_digit(first10)) + reissues


def test_the_licence_check_digit_is_the_published_mod_11_rule():
    """Weights 5 4 3 2 7 6 5 4 3 2 over the first ten digits; 11 - sum mod 11, its last digit."""
    assert jp_licence_check_digit("4598033587") == 2  # 174 mod 11 = 9, 11 - 9 = 2
    assert jp_drivers_license("459803358720")
    assert not jp_drivers_license("459803358730")  # wrong check digit
    assert not jp_drivers_license(licence("9998033587"))  # 99 is no prefecture's commission
    assert not jp_drivers_license("45980335872")  # eleven digits


LICENCE = licence("3019123456")
PASSES = [
    ("JP_DRIVERS_LICENSE", "運転免許証番号：{}", LICENCE),
    ("JP_DRIVERS_LICENSE", "免許証 第{}号", LICENCE),
    ("JP_DRIVERS_LICENSE", "Driver's license: {}", licence("5405123456", "1")),
    ("JP_DRIVERS_LICENSE", "運転免許 {}", f"{LICENCE[:4]} {LICENCE[4:8]} {LICENCE[8:]}"),
    ("JP_PASSPORT", "旅券番号 {}", "TK1234567"),
    ("JP_PASSPORT", "Passport No. {} (Japan)", "MZ7654321"),
    ("JP_BANK_ACCOUNT", "三井住友銀行 新宿支店 普通 {}", "1234567"),
    ("JP_BANK_ACCOUNT", "口座番号：{}", "7654321"),
    ("JP_POSTAL_CODE", "〒{} 東京都千代田区千代田1-1", "100-0001"),
    ("JP_POSTAL_CODE", "郵便番号：{}", "150-0002"),
]


@pytest.mark.parametrize(("kind", "template", "value"), PASSES, ids=[f"{k}:{t[:6]}" for k, t, _ in PASSES])
def test_japanese_identifiers_are_found_near_their_context(kind, template, value):
    text = template.format(value)
    assert found(text) == [(kind, value)]


NEAR_MISSES = [
    f"注文番号 {LICENCE}",  # a valid licence number, no licence word
    f"運転免許証 {LICENCE[:10]}{(int(LICENCE[10]) + 1) % 10}0",  # check digit wrong
    f"運転免許証 00{LICENCE[2:]}",  # no prefecture 00
    "品番 TK1234567",  # passport shape, no passport word
    "旅券 TK12345678",  # eight digits
    "passport photo 2 AB12345 x",  # five digits
    "注文番号 1234567",  # seven digits, no bank word
    "口座残高 1234567円",  # an amount, not an account
    "銀行振込 ¥1234567",
    "口座 12345678",  # eight digits
    "銀行 1234-567",
    "大阪支店の来客数 1234567 人",  # a branch is not a bank account
    "部品番号 100-0001",  # postal shape, no 〒
    "〒 は郵便のしるしです。部品 100-0001",  # 〒 too far away
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_japanese_near_misses_stay_quiet(text):
    assert found(text) == []


# --- full-width digits ---------------------------------------------------------------------------------

WIDE = [
    ("PHONE", "電話：{}（代表）", "03-1234-5678"),
    ("PHONE", "お問い合わせ {} まで", "+81 90 1234 5678"),
    ("CREDIT_CARD", "カード番号 {} 有効期限", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "カード {}", "5555-5555-5555-4444"),
    ("US_SSN", "SSN {}", "536-22-1234"),
    ("JP_DRIVERS_LICENSE", "運転免許証 {}", LICENCE),
    ("JP_POSTAL_CODE", "〒{} 東京都", "100-0001"),
]


@pytest.mark.parametrize(("kind", "template", "value"), WIDE, ids=[f"{k}:{v}" for k, _, v in WIDE])
def test_a_number_in_full_width_digits_is_read_as_its_ascii_form(kind, template, value):
    """The finding points at the full-width characters in the original text (offsets unchanged)."""
    wide = value.translate(FULL_WIDTH).replace("+", "＋")
    text = template.format(wide)
    assert found(text) == [(kind, wide)]


def test_full_width_dashes_and_ideographic_spaces_between_digits_fold_one_for_one():
    text = "携帯 ０９０ー１２３４ー５６７８、（０３）１２３４－５６７８、１２３４\u3000５６７８、２０２４年、ラーメン"
    folded = fold_digits(text)
    assert len(folded) == len(text)
    assert folded == "携帯 090-1234-5678、(03)1234-5678、1234 5678、2024年、ラーメン"


def test_full_width_near_misses_stay_quiet():
    for text in (
        "２０２４年５月１７日",
        "注文番号 ４１１１ １１１１ １１１１ １１１２",
        "第１２３４５６７８９０１２号",
    ):
        assert found(text) == []


def test_a_full_width_excerpt_masks_the_value_and_keeps_the_original_text():
    text = "カード番号 ４１１１ １１１１ １１１１ １１１１ です"
    ctx = DetectContext(Fingerprinter(b"k" * 32), "/srv/drop/in/a.txt")
    (finding,) = DETECTOR.detect(TextView(name="text", text=text, encoding="utf-8"), ctx)
    assert finding.excerpt.startswith("カード番号 [") and "４１１１ １１１１ １１１１" not in finding.excerpt
