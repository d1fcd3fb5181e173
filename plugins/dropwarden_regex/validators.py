"""Named checks that confirm a regex match is a real value (Luhn, SSN ranges, IBAN mod-97, My Number)."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import unicodedata
from collections.abc import Callable

from dropwarden_regex.secret_validators import SECRET_VALIDATORS

Validator = Callable[[str | bytes], bool]


_NOT_DIGIT = re.compile(r"[^0-9]+")


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value if value.isascii() else unicodedata.normalize("NFKC", value)


def _digits(value: str | bytes) -> str:
    """The ASCII digits of a value, full-width digits folded, every separator dropped."""
    return _NOT_DIGIT.sub("", _text(value))


# --- payment cards -------------------------------------------------------------------------------


_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")  # digit -> digit sum of its double


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) checksum over a string of digits, check digit last."""
    if digits.isascii() and digits.isdigit():
        raw = digits.encode("ascii")
        return (sum(raw[-1::-2]) + sum(raw[-2::-2].translate(_LUHN_DOUBLED)) - 48 * len(raw)) % 10 == 0
    total = 0
    for index, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if index % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_check_digit(payload: str) -> str:
    """The digit that, appended to `payload`, makes the Luhn checksum pass."""
    for candidate in "0123456789":
        if luhn_ok(payload + candidate):
            return candidate
    raise AssertionError("unreachable: one digit always completes a Luhn sum")


# (issuer, lowest prefix, highest prefix, allowed lengths). Prefixes compare as integers of the same
# number of digits, so ("mastercard", "2221", "2720") covers 2221..2720.
CARD_ISSUERS: tuple[tuple[str, str, str, frozenset[int]], ...] = (
    ("amex", "34", "34", frozenset({15})),
    ("amex", "37", "37", frozenset({15})),
    ("visa", "4", "4", frozenset({13, 16, 19})),
    ("mastercard", "51", "55", frozenset({16})),
    ("mastercard", "2221", "2720", frozenset({16})),
    ("mir", "2200", "2204", frozenset(range(16, 20))),
    ("discover", "6011", "6011", frozenset(range(16, 20))),
    ("discover", "644", "649", frozenset(range(16, 20))),
    ("discover", "65", "65", frozenset(range(16, 20))),
    ("discover", "622126", "622925", frozenset(range(16, 20))),
    ("jcb", "3528", "3589", frozenset(range(16, 20))),
    ("diners", "300", "305", frozenset(range(14, 20))),
    ("diners", "3095", "3095", frozenset(range(14, 20))),
    ("diners", "36", "36", frozenset(range(14, 20))),
    ("diners", "38", "39", frozenset(range(16, 20))),
    ("unionpay", "62", "62", frozenset(range(16, 20))),
    ("maestro", "5018", "5018", frozenset(range(12, 20))),
    ("maestro", "5020", "5020", frozenset(range(12, 20))),
    ("maestro", "5038", "5038", frozenset(range(12, 20))),
    ("maestro", "5893", "5893", frozenset(range(12, 20))),
    ("maestro", "6304", "6304", frozenset(range(12, 20))),
    ("maestro", "6759", "6759", frozenset(range(12, 20))),
    ("maestro", "6761", "6763", frozenset(range(12, 20))),
    ("dankort", "5019", "5019", frozenset({16})),
    ("elo", "509", "509", frozenset({16})),
    ("elo", "5066", "5067", frozenset({16})),
    ("verve", "506099", "506198", frozenset(range(16, 20))),
    ("verve", "650002", "650027", frozenset(range(16, 20))),
    ("rupay", "508", "508", frozenset({16})),
    ("rupay", "60", "60", frozenset({16})),
)


@functools.cache
def _issuers_by_prefix() -> tuple[dict[str, list[tuple[str, frozenset[int]]]], list[int]]:
    """Every concrete prefix of CARD_ISSUERS -> its (issuer, lengths), and the prefix sizes, longest first."""
    table: dict[str, list[tuple[str, frozenset[int]]]] = {}
    for name, low, high, lengths in CARD_ISSUERS:
        for prefix in range(int(low), int(high) + 1):
            table.setdefault(str(prefix), []).append((name, lengths))
    return table, sorted({len(low) for _, low, _, _ in CARD_ISSUERS}, reverse=True)


def card_issuer(digits: str) -> str | None:
    """The issuer whose prefix range and length rules `digits` fits (longest prefix first), or None."""
    table, sizes = _issuers_by_prefix()
    for size in sizes:
        for name, lengths in table.get(digits[:size], ()):
            if len(digits) in lengths:
                return name
    return None


def luhn_card(value: str | bytes) -> bool:
    """A payment card number: 12-19 digits, a known issuer prefix and length, and a valid Luhn digit."""
    digits = value if isinstance(value, str) and value.isascii() and value.isdigit() else _digits(value)
    size = len(digits)
    if not 12 <= size <= 19:
        return False
    # luhn_ok inlined: this runs on every card-shaped number in a table, most of which fail here
    raw = digits.encode("ascii")
    if (sum(raw[-1::-2]) + sum(raw[-2::-2].translate(_LUHN_DOUBLED)) - 48 * size) % 10:
        return False
    return card_issuer(digits) is not None


# --- national identifiers ------------------------------------------------------------------------


def us_ssn(value: str | bytes) -> bool:
    """A US Social Security number: area not 000/666/900-999, group not 00, serial not 0000."""
    digits = _digits(value)
    if len(digits) != 9:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"


def my_number_check_digit(first11: str) -> int:
    """The check digit of a Japanese Individual Number (マイナンバー) from its first 11 digits.

    Weights, counted from the digit left of the check digit: n + 1 for n = 1..6, n - 5 for n = 7..11.
    """
    if len(first11) != 11 or not first11.isdigit():
        raise ValueError("expected 11 digits")
    total = 0
    for n, ch in enumerate(reversed(first11), start=1):
        total += int(ch) * (n + 1 if n <= 6 else n - 5)
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


def jp_my_number(value: str | bytes) -> bool:
    """A Japanese Individual Number: exactly 12 digits whose last digit is the official check digit."""
    digits = _digits(value)
    return len(digits) == 12 and my_number_check_digit(digits[:11]) == int(digits[11])


# Prefectural public safety commissions (the first two digits of a driver's licence number).
_JP_LICENCE_ISSUERS = frozenset(
    [*range(10, 15), *range(20, 26), 30, *range(40, 56), *range(60, 66), *range(70, 75), *range(80, 84),
     *range(90, 98)]
)  # fmt: skip
_JP_LICENCE_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def jp_licence_check_digit(first10: str) -> int:
    """The 11th digit of a Japanese driver's licence number: (11 - weighted sum mod 11) mod 10, weights
    5 4 3 2 7 6 5 4 3 2 from the left (mod-11 with 10 and 11 folded onto 0 and 1)."""
    if len(first10) != 10 or not first10.isdigit():
        raise ValueError("expected 10 digits")
    total = sum(int(ch) * weight for ch, weight in zip(first10, _JP_LICENCE_WEIGHTS, strict=True))
    return (11 - total % 11) % 10


def jp_drivers_license(value: str | bytes) -> bool:
    """A Japanese driver's licence number: 12 digits, a prefecture's commission code first, the check
    digit 11th (the 12th counts reissues)."""
    digits = _digits(value)
    return (
        len(digits) == 12
        and int(digits[:2]) in _JP_LICENCE_ISSUERS
        and jp_licence_check_digit(digits[:10]) == int(digits[10])
    )


# --- bank accounts -------------------------------------------------------------------------------

# IBAN length per country (SWIFT IBAN registry): SEPA countries and the other common ones.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_mod97(iban: str) -> int:
    """ISO 7064 mod 97-10 of an IBAN (country and check digits moved to the end, letters as 10..35)."""
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97


def iban_check_digits(country: str, bban: str) -> str:
    """The two check digits that make `country + check + bban` a valid IBAN."""
    return f"{98 - iban_mod97(country + '00' + bban):02d}"


def iban(value: str | bytes) -> bool:
    """An IBAN (spaces and hyphens between groups ignored): known country, that country's exact length,
    alphanumeric BBAN, mod-97 remainder 1."""
    compact = "".join(_text(value).replace("-", " ").split()).upper()
    if not (15 <= len(compact) <= 34) or not compact.isascii() or not compact.isalnum():
        return False
    country, check = compact[:2], compact[2:4]
    if IBAN_LENGTHS.get(country) != len(compact) or not check.isdigit():
        return False
    return check not in ("00", "01", "99") and iban_mod97(compact) == 1


# --- phone numbers -------------------------------------------------------------------------------


def _nanp_ten(digits: str) -> bool:
    if len(digits) != 10:
        return False
    area, exchange = digits[:3], digits[3:6]
    if area[0] in "01" or area[1] == "9" or area[1:] == "11":
        return False
    return exchange[0] not in "01" and exchange[1:] != "11"


def nanp_phone(value: str | bytes) -> bool:
    """A North American number: optional country code 1, area code and exchange NXX and not N11."""
    digits = _digits(value)
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    return _nanp_ten(digits)


_JP_ELEVEN_DIGIT_PREFIXES = ("050", "060", "070", "080", "090", "0800")


def _jp_national(digits: str) -> bool:
    if len(digits) < 10 or digits[0] != "0" or digits[1] == "0":
        return False
    return len(digits) == (11 if digits.startswith(_JP_ELEVEN_DIGIT_PREFIXES) else 10)


def jp_phone(value: str | bytes) -> bool:
    """A Japanese number in national format: trunk 0, then 9 digits (fixed, 0120, 0570) or 10 digits
    (mobile 070/080/090, IP phone 050, 0800 free dial)."""
    return _jp_national(_digits(value))


# Country calling codes (ITU-T E.164 assignments), grouped by length.
_CC1 = frozenset({1, 7})
_CC2 = frozenset({
    20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54, 55, 56,
    57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98,
})  # fmt: skip
_CC3 = frozenset({
    211, 212, 213, 216, 218, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233,
    234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252,
    253, 254, 255, 256, 257, 258, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 290, 291, 297,
    298, 299, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 370, 371, 372, 373, 374, 375, 376,
    377, 378, 379, 380, 381, 382, 383, 385, 386, 387, 389, 420, 421, 423, 500, 501, 502, 503, 504,
    505, 506, 507, 508, 509, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 670, 672, 673, 674,
    675, 676, 677, 678, 679, 680, 681, 682, 683, 685, 686, 687, 688, 689, 690, 691, 692, 800, 808,
    850, 852, 853, 855, 856, 870, 878, 880, 881, 882, 883, 886, 888, 960, 961, 962, 963, 964, 965,
    966, 967, 968, 970, 971, 972, 973, 974, 975, 976, 977, 991, 992, 993, 994, 995, 996, 998,
})  # fmt: skip


def _country_code(digits: str) -> str | None:
    for length, codes in ((1, _CC1), (2, _CC2), (3, _CC3)):
        if len(digits) > length and int(digits[:length]) in codes:
            return digits[:length]
    return None


def e164(value: str | bytes) -> bool:
    """An international number: '+', an assigned country code, 8-15 digits in all (a trunk prefix "(0)"
    not counted); +1 numbers must be valid NANP numbers and +81 numbers valid Japanese ones (without
    the trunk 0)."""
    text = _text(value).strip().replace("(0)", "")  # the trunk prefix, written but not dialled
    digits = _digits(text)
    if not text.startswith("+") or not 8 <= len(digits) <= 15:
        return False
    code = _country_code(digits)
    if code is None:
        return False
    national = digits[len(code) :]
    if code == "1":
        return _nanp_ten(national)
    if code == "81":
        return _jp_national("0" + national)
    return len(national) >= 6


# --- internet identifiers and tokens -------------------------------------------------------------

# Trailing "labels" that are file extensions, not TLDs: "icon@2x.png" is an asset name, not an address.
_NOT_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "css", "js"})


def email(value: str | bytes) -> bool:
    """An e-mail address whose last label is not a file extension (retina assets like x@2x.png)."""
    text = _text(value)
    local, sep, domain = text.rpartition("@")
    return bool(local and sep and "." in domain) and domain.rsplit(".", 1)[1].lower() not in _NOT_TLDS


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def jwt(value: str | bytes) -> bool:
    """A JSON Web Token: three dot-separated base64url segments, the header a JSON object with "alg"."""
    parts = _text(value).split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return False
    try:
        header = json.loads(_b64url_decode(parts[0]))
    except (binascii.Error, ValueError):
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


VALIDATORS: dict[str, Validator] = {
    "luhn_card": luhn_card,
    "us_ssn": us_ssn,
    "iban": iban,
    "jp_my_number": jp_my_number,
    "jp_drivers_license": jp_drivers_license,
    "nanp_phone": nanp_phone,
    "jp_phone": jp_phone,
    "e164": e164,
    "email": email,
    "jwt": jwt,
    **SECRET_VALIDATORS,  # entropy floors, placeholders, decodings (secret_validators.py)
}


def unknown_validator(name: str) -> str:
    """The complaint about a validator name that is not registered, listing the known ones."""
    return f"unknown validator {name!r} (known: {', '.join(sorted(VALIDATORS))})"


def get_validator(name: str, where: str) -> Validator:
    """The validator called `name`; `where` names the setting (e.g. "rules.custom[0].validator")."""
    try:
        return VALIDATORS[name]
    except KeyError:
        raise ValueError(f"{where}: {unknown_validator(name)}") from None
