"""Validators of the regex plugin: generated valid values pass, near misses fail."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dropwarden_regex import validators as v

DIGITS = "0123456789"


def digit_strings(min_size: int, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet=DIGITS, min_size=min_size, max_size=min_size if max_size is None else max_size)


def with_luhn(payload: str) -> str:
    return payload + v.luhn_check_digit(payload)


def group4(value: str, sep: str = " ") -> str:
    return sep.join(value[i : i + 4] for i in range(0, len(value), 4))


# --- payment cards -------------------------------------------------------------------------------

# (issuer, prefixes to draw from, lengths)
ISSUERS = [
    ("visa", ["4"], [13, 16, 19]),
    ("mastercard", [str(p) for p in range(51, 56)] + ["2221", "2500", "2720"], [16]),
    ("amex", ["34", "37"], [15]),
    ("discover", ["6011", "644", "649", "65", "622126", "622925"], [16, 19]),
    ("jcb", ["3528", "3550", "3589"], [16, 19]),
    ("diners", ["300", "305", "36", "38"], [16]),
    ("unionpay", ["62"], [16, 17, 18, 19]),
    ("maestro", ["5018", "6304", "6759"], [12, 16, 19]),
    ("mir", ["2200", "2204"], [16]),
]


@st.composite
def card_numbers(draw: st.DrawFn, issuer: tuple[str, list[str], list[int]]) -> str:
    _, prefixes, lengths = issuer
    prefix = draw(st.sampled_from(prefixes))
    length = draw(st.sampled_from(lengths))
    middle = draw(digit_strings(length - len(prefix) - 1))
    return with_luhn(prefix + middle)


@pytest.mark.parametrize("issuer", ISSUERS, ids=[i[0] for i in ISSUERS])
@settings(max_examples=60)
@given(data=st.data())
def test_generated_card_numbers_of_every_issuer_are_accepted(issuer, data):
    number = data.draw(card_numbers(issuer))
    assert v.luhn_card(number)
    assert v.luhn_card(group4(number))
    assert v.luhn_card(group4(number, "-"))
    assert v.card_issuer(number) is not None


@pytest.mark.parametrize("issuer", ISSUERS, ids=[i[0] for i in ISSUERS])
@settings(max_examples=60)
@given(data=st.data())
def test_card_numbers_with_a_wrong_check_digit_are_rejected(issuer, data):
    number = data.draw(card_numbers(issuer))
    wrong = data.draw(st.sampled_from([d for d in DIGITS if d != number[-1]]))
    assert not v.luhn_card(number[:-1] + wrong)


@settings(max_examples=200)
@given(first=st.sampled_from("0789"), rest=digit_strings(14))
def test_luhn_valid_numbers_without_a_known_issuer_prefix_are_rejected(first, rest):
    number = with_luhn(first + rest)
    if first == "8" or number.startswith(("7", "0")):
        assert v.card_issuer(number) is None
    assert not v.luhn_card(number)


def test_card_lengths_must_fit_the_issuer():
    assert v.luhn_card("378282246310005")  # Amex, 15 digits
    assert not v.luhn_card(with_luhn("37828224631000"[:-1] + "00"))  # Amex, 16 digits
    assert not v.luhn_card(with_luhn("4" + "1" * 13))  # Visa, 15 digits
    assert not v.luhn_card(with_luhn("5" + "5" * 16))  # Mastercard, 18 digits


@pytest.mark.parametrize(
    "number",
    ["4111111111111111", "5555555555554444", "2223003122003222", "378282246310005", "6011111111111117",
     "3530111333300000", "36227206271667", "6200000000000005", "4222222222222"],
)  # fmt: skip
def test_well_known_test_card_numbers_are_accepted(number):
    assert v.luhn_card(number)


def test_full_width_card_digits_are_folded():
    assert v.luhn_card("４１１１ １１１１ １１１１ １１１１")


# --- US SSN --------------------------------------------------------------------------------------


@st.composite
def valid_ssns(draw: st.DrawFn) -> str:
    area = draw(st.integers(1, 899).filter(lambda a: a != 666))
    group = draw(st.integers(1, 99))
    serial = draw(st.integers(1, 9999))
    return f"{area:03d}-{group:02d}-{serial:04d}"


@given(valid_ssns())
def test_generated_ssns_are_accepted(ssn):
    assert v.us_ssn(ssn)
    assert v.us_ssn(ssn.replace("-", ""))


@given(ssn=valid_ssns(), area=st.sampled_from(["000", "666", *[str(a) for a in range(900, 1000)]]))
def test_ssns_with_area_000_666_or_9xx_are_rejected(ssn, area):
    assert not v.us_ssn(area + ssn[3:])


@given(valid_ssns())
def test_ssns_with_group_00_or_serial_0000_are_rejected(ssn):
    assert not v.us_ssn(ssn[:4] + "00" + ssn[6:])
    assert not v.us_ssn(ssn[:7] + "0000")


def test_ssns_must_have_nine_digits():
    assert not v.us_ssn("123-45-678")
    assert not v.us_ssn("123-45-67890")


# --- IBAN ----------------------------------------------------------------------------------------

IBAN_COUNTRIES = [
    "DE",
    "FR",
    "GB",
    "NL",
    "BE",
    "ES",
    "IT",
    "AT",
    "CH",
    "NO",
    "PL",
    "SE",
    "IE",
    "MT",
    "SA",
    "BR",
]


@st.composite
def valid_ibans(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(IBAN_COUNTRIES))
    bban_length = v.IBAN_LENGTHS[country] - 4
    bban = draw(
        st.text(alphabet=DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=bban_length, max_size=bban_length)
    )
    return country + v.iban_check_digits(country, bban) + bban


@settings(max_examples=200)
@given(valid_ibans())
def test_generated_ibans_are_accepted_compact_and_grouped(iban):
    assert v.iban(iban)
    assert v.iban(group4(iban))
    assert v.iban(iban.lower())


@settings(max_examples=200)
@given(iban=valid_ibans(), delta=st.integers(1, 96))
def test_ibans_with_a_wrong_checksum_are_rejected(iban, delta):
    check = (int(iban[2:4]) + delta - 2) % 97 + 2  # another check value in 02..98
    assert not v.iban(f"{iban[:2]}{check:02d}{iban[4:]}")


@given(iban=valid_ibans(), extra=st.sampled_from(["", "0", "12"]), cut=st.booleans())
def test_ibans_of_the_wrong_length_for_their_country_are_rejected_even_with_a_valid_checksum(
    iban, extra, cut
):
    country, bban = iban[:2], iban[4:]
    bban = bban[:-1] if cut or not extra else bban + extra
    assert not v.iban(country + v.iban_check_digits(country, bban) + bban)


@pytest.mark.parametrize(
    "iban",
    ["DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32", "FR14 2004 1010 0505 0001 3M02 606",
     "NL91 ABNA 0417 1643 00", "BE68 5390 0754 7034", "NO93 8601 1117 947", "CH93 0076 2011 6238 5295 7",
     "MT84 MALT 0110 0001 2345 MTLC AST0 01S"],
)  # fmt: skip
def test_published_example_ibans_are_accepted(iban):
    assert v.iban(iban)


def test_ibans_of_unknown_countries_are_rejected():
    assert not v.iban("XX" + v.iban_check_digits("XX", "37040044053201300") + "37040044053201300")


# --- Japanese My Number --------------------------------------------------------------------------


@given(digit_strings(11))
def test_generated_my_numbers_are_accepted(first11):
    number = first11 + str(v.my_number_check_digit(first11))
    assert v.jp_my_number(number)
    assert v.jp_my_number(f"{number[:4]} {number[4:8]} {number[8:]}")


@given(digit_strings(11))
def test_exactly_one_check_digit_completes_a_my_number(first11):
    accepted = [d for d in DIGITS if v.jp_my_number(first11 + d)]
    assert accepted == [str(v.my_number_check_digit(first11))]


def test_my_number_check_digit_matches_the_published_algorithm():
    # 12345678901 -> sum of digit * weight = 212; 212 % 11 = 3; 11 - 3 = 8
    assert v.my_number_check_digit("12345678901") == 8
    assert v.jp_my_number("123456789018")
    assert not v.jp_my_number("123456789012")
    assert not v.jp_my_number("12345678901")  # 11 digits


# --- phones --------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["(415) 555-2671", "415-555-2671", "+1 415 555 2671", "1-800-555-1234"])
def test_valid_nanp_numbers_are_accepted(number):
    assert v.nanp_phone(number)


@pytest.mark.parametrize(
    "number", ["123-456-7890", "415-155-2671", "911-555-1234", "415-911-1234", "495-555-1234", "415-555-267"]
)
def test_nanp_numbers_with_impossible_area_codes_or_exchanges_are_rejected(number):
    assert not v.nanp_phone(number)


@pytest.mark.parametrize(
    "number", ["03-1234-5678", "090-1234-5678", "0120-123-456", "0465-12-3456", "050-1234-5678"]
)
def test_valid_japanese_numbers_are_accepted(number):
    assert v.jp_phone(number)


@pytest.mark.parametrize("number", ["03-1234-567", "090-1234-567", "00-1234-5678", "03-12-34", "3-1234-5678"])
def test_japanese_numbers_of_the_wrong_length_or_prefix_are_rejected(number):
    assert not v.jp_phone(number)


@pytest.mark.parametrize(
    "number", ["+14155552671", "+81 90 1234 5678", "+81-3-1234-5678", "+44 20 7946 0958"]
)
def test_valid_e164_numbers_are_accepted(number):
    assert v.e164(number)


@pytest.mark.parametrize(
    "number", ["+1 123 555 2671", "+81 090 1234 5678", "+999 1234 5678", "+44 1234", "14155552671"]
)
def test_invalid_e164_numbers_are_rejected(number):
    assert not v.e164(number)


# --- other ---------------------------------------------------------------------------------------


def _segment(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


@given(
    alg=st.sampled_from(["HS256", "RS256", "ES384", "none"]),
    claims=st.dictionaries(st.text(max_size=5), st.integers()),
)
def test_jwts_with_a_json_header_naming_alg_are_accepted(alg, claims):
    assert v.jwt(f"{_segment({'alg': alg, 'typ': 'JWT'})}.{_segment(claims)}.c2lnbmF0dXJl")


def test_jwt_lookalikes_are_rejected():
    assert not v.jwt(f"{_segment({'typ': 'JWT'})}.{_segment({})}.sig")  # no alg
    assert not v.jwt(f"{_segment([1, 2])}.{_segment({})}.sig")  # header not an object
    assert not v.jwt("eyJub3QganNvbg.eyJ9.sig")  # header not JSON
    assert not v.jwt(f"{_segment({'alg': 'HS256'})}.{_segment({})}")  # two segments


def test_email_addresses_are_accepted_but_retina_asset_names_are_not():
    assert v.email("john.doe@example.co.jp")
    assert not v.email("logo@2x.png")


def test_every_validator_is_registered_by_name():
    assert set(v.VALIDATORS) >= {
        "luhn_card",
        "us_ssn",
        "iban",
        "jp_my_number",
        "nanp_phone",
        "jp_phone",
        "e164",
    }
    assert v.get_validator("iban", "x") is v.iban


def test_an_unknown_validator_name_raises_naming_the_setting_and_the_known_ones():
    with pytest.raises(
        ValueError, match=r"rules\.custom\[2\]\.validator: unknown validator 'foo' \(known: .*luhn_card"
    ):
        v.get_validator("foo", "rules.custom[2].validator")


def test_validators_accept_bytes():
    assert v.luhn_card(b"4111 1111 1111 1111")
    assert v.iban(b"DE89370400440532013000")
