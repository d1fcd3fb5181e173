"""Rule packs, custom rules, allow-list and findings of the regex detector, on realistic text."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dropwarden.config import SettingError, Settings
from dropwarden.findings import Severity
from dropwarden.redact import Fingerprinter
from dropwarden.registry import DetectContext, Detector, Registry
from dropwarden.views import ImageView, TextView
from dropwarden_regex import RegexDetector, dropwarden_register_detectors
from dropwarden_regex.rules import load_pack, load_rules
from dropwarden_regex.settings import AllowList, CustomRule, RulesSettings
from dropwarden_regex.validators import luhn_card, my_number_check_digit

KEY = b"0123456789abcdef0123456789abcdef"
FINGERPRINT = Fingerprinter(KEY)


def detect(text: str, rules: RulesSettings | None = None, path: str = "/srv/drop/in/report.txt"):
    detector = RegexDetector(rules if rules is not None else RulesSettings())
    return detector.detect(
        TextView(name="text", text=text, encoding="utf-8"), DetectContext(FINGERPRINT, path)
    )


def values(findings, text: str) -> list[tuple[str, str]]:
    return [(f.type, text[f.location.offset : f.location.offset + f.location.length]) for f in findings]


def my_number(first11: str) -> str:
    return first11 + str(my_number_check_digit(first11))


def b64url(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()


JWT = f"{b64url({'alg': 'HS256', 'typ': 'JWT'})}.{b64url({'sub': '1234567890', 'name': 'Jane'})}.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
GITHUB_CLASSIC = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GITHUB_FINE = (
    "github_pat_11ABCDEFG0123456789abc_" + "N1GTPdVKsb1DS2S5yXB62gin7BMsFxvKK4Q519Pk174JSnZJrd09fXzjsV2"
)
AWS_KEY_ID = "AKIAHRLTUCA2IH7P2PUE"  # AKIAIOSFODNN7EXAMPLE is AWS's documentation key: a placeholder
RSA_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)
OPENSSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDEa1kEcX1h0n5Vf7MBx7Ez6U7QbPdW4jkQ8W0R7h7hvgAAAJgx6v5KMer+\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


# --- every finding type in realistic text --------------------------------------------------------

DETECTED = [
    ("EMAIL", "Please send invoices to {} before Friday.", "jane.doe+billing@example.co.uk"),
    ("EMAIL", "mailto:{}", "ops@mail.example.com"),
    ("PHONE", "Call our office at {} (9am-5pm).", "(415) 555-2671"),
    ("PHONE", "Fax: {}.", "415.555.2671"),
    ("PHONE", "Toll free {}", "1-800-555-1234"),
    ("PHONE", "Support line {}, press 2.", "+14155552671"),
    ("PHONE", "Tokyo office: {}", "03-1234-5678"),
    ("PHONE", "携帯 {} まで", "090-1234-5678"),
    ("PHONE", "フリーダイヤル {}", "0120-123-456"),
    ("PHONE", "From abroad dial {} please.", "+81 90 1234 5678"),
    ("PHONE", "Our London number is {}.", "+44 20 7946 0958"),
    ("PHONE", "電話：{}（代表）", "０３－１２３４－５６７８"),
    ("PHONE", "携帯電話 {} まで", "０９０ー１２３４ー５６７８"),
    ("CREDIT_CARD", "Card number: {} exp 12/27", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "Paid with {}.", "5555-5555-5555-4444"),
    ("CREDIT_CARD", "amex={};", "378282246310005"),
    ("CREDIT_CARD", "Amex {} on file", "3782 822463 10005"),
    ("CREDIT_CARD", "JCB:{}", "3530111333300000"),
    ("US_SSN", "Employee SSN: {}, DOB 1980-01-01", "536-22-1234"),
    ("IBAN", "IBAN: {} BIC: COBADEFFXXX", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "Pay to {} by Monday.", "GB82WEST12345698765432"),
    ("IBAN", "Rekening {}", "NL91 ABNA 0417 1643 00"),
    ("JP_MY_NUMBER", "マイナンバー：{}", my_number("12345678901")),
    ("JP_MY_NUMBER", "個人番号 {} を提出してください", "9876 5432 1018"),
    ("JP_MY_NUMBER", "My Number: {}", "1234-5678-9018"),
    ("JP_MY_NUMBER", "マイナンバー　{}", "１２３４　５６７８　９０１８"),
    ("AWS_ACCESS_KEY", "aws_access_key_id = {}", AWS_KEY_ID),
    ("AWS_ACCESS_KEY", 'export AWS_ACCESS_KEY_ID="{}"', "ASIAY34FZKBOKMUTVV7A"),
    ("GITHUB_TOKEN", "token: {}", GITHUB_CLASSIC),
    ("GITHUB_TOKEN", "GITHUB_TOKEN={}", GITHUB_FINE),
    ("PRIVATE_KEY", "key.pem:\n{}\n", RSA_KEY),
    ("PRIVATE_KEY", "id_ed25519:\n{}\n", OPENSSH_KEY),
    ("PRIVATE_KEY", '{{"private_key": "{}\\n"}}', RSA_KEY.replace("\n", "\\n")),
    ("JWT", "Authorization: Bearer {}", JWT),
]


@pytest.mark.parametrize(
    ("kind", "template", "value"), DETECTED, ids=[f"{k}:{v[:16]}" for k, _, v in DETECTED]
)
def test_each_finding_type_is_detected_in_realistic_text(kind, template, value):
    text = template.format(value)
    findings = detect(text)
    assert values(findings, text) == [(kind, value)]
    finding = findings[0]
    assert finding.detector == "regex"
    assert finding.rule.startswith(("pii.", "secrets."))
    assert finding.severity >= Severity.MEDIUM
    assert 0 < finding.confidence <= 1


def test_a_japanese_document_in_utf8_yields_my_number_phone_and_email_with_character_locations():
    number = my_number("31415926535")
    text = (
        "社員情報シート\n"
        "氏名：山田 太郎\n"
        f"マイナンバー（個人番号）：{number}\n"
        "電話番号：090-1234-5678\n"
        "メール：taro.yamada@example.co.jp\n"
    )
    findings = detect(text)
    assert values(findings, text) == [
        ("JP_MY_NUMBER", number),
        ("PHONE", "090-1234-5678"),
        ("EMAIL", "taro.yamada@example.co.jp"),
    ]
    my, phone, mail = findings
    assert (my.location.line, my.location.column) == (3, len("マイナンバー（個人番号）：") + 1)
    assert (phone.location.line, phone.location.column) == (4, 6)
    assert (mail.location.line, mail.location.column) == (5, 5)
    assert my.location.view == "text"


def test_a_valid_my_number_without_context_words_is_not_reported():
    number = my_number("10023456789")
    full_width = number.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    for text in (
        f"注文番号：{number}",
        f"Invoice {number} was paid.",
        f"tracking {number}",
        f"注文番号：{full_width}",
    ):
        assert detect(text) == []


def test_my_number_context_may_follow_the_number_and_is_case_insensitive():
    number = my_number("55512345678")
    assert values(detect(f"{number} is my MY NUMBER"), f"{number} is my MY NUMBER") == [
        ("JP_MY_NUMBER", number)
    ]


def test_my_number_context_farther_than_the_window_does_not_count():
    number = my_number("55512345678")
    assert detect("マイナンバー" + "。" * 80 + number) == []


# --- bare digit runs and look-alikes stay silent -------------------------------------------------

SILENT = [
    "Order #100234567890 shipped on 2024-05-17.",
    "Your order number is 2024051700123456, thank you!",
    "Order ORD-2024-000123-4567 is on its way",
    "PO 4500012345 / line 10",
    "UPS tracking 1Z999AA10123456784 (ground)",
    "USPS tracking 9400 1000 0000 0000 0000 00",
    "USPS 9400100000000000000000",
    "FedEx tracking number 123456789012",
    "ISBN 978-4-06-123456-3 and ISBN-13 9784061234567",
    "created_at=1700000000 updated_at=1700000000123 nanos=1700000000123456789",
    "request id 123e4567-e89b-12d3-a456-426614174000",
    "UUID 01234567-0312-3456-7890-0123456789ab",
    "sha256 9f86d081884c7d659a2feaea0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0",
    "md5 5d41402abc4b2a76b9719d911017c592 sha1 2aae6c35c94fcfb415dbe95f408b9ce91ee846ed",
    "digits-only sha-like 1234567890123456789012345678901234567890",
    "Call 09012345678 or 4155552671 (no separators: not reported)",
    "pi is 3.14159265358979323846 and e is 2.718281828459045",
    "Server 192.168.100.200 port 8080, version 10.2.3456.7890",
    "Total: $1,234,567.89 on 2024/05/17 at 17:45:00",
    "Page 123 of 456, figure 12-34-5678",
    "Section 123-45-6789-1 of the code",
    "icon@2x.png and banner@3x.jpg",
    "NOT AN IBAN: DE00 1234 5678 9012 3456 78",
    "AKIA1234 is too short, and XAKIAIOSFODNN7EXAMPLE is embedded",
    "ghp_short and gh_p_abcdefghijklmnopqrstuvwxyz0123456789",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo4lgO\n-----END PUBLIC KEY-----",
    "Paste your key between -----BEGIN PRIVATE KEY----- and the END line.",
    "eyJub3QiOiJhIGp3dCJ9.eyJzdWIiOiIxIn0.c2ln (header without alg)",
]


@pytest.mark.parametrize("text", SILENT)
def test_bare_digit_runs_and_lookalikes_produce_no_findings(text):
    assert values(detect(text), text) == []


@settings(max_examples=300)
@given(
    digits=st.text(alphabet="0123456789", min_size=1, max_size=30),
    before=st.sampled_from(["", "no ", "#", "id="]),
)
def test_a_bare_digit_run_is_at_most_a_luhn_valid_card(digits, before):
    text = f"{before}{digits} end"
    found = values(detect(text), text)
    if luhn_card(digits) and 12 <= len(digits) <= 19:
        assert found == [("CREDIT_CARD", digits)]
    else:
        assert found == []


def _luhn_valid_runs(first: str, length: int, count: int) -> list[str]:
    """The first `count` digit runs of `length` starting with `first` that pass the card check."""
    runs, body = [], int(first + "0" * (length - len(first) - 1))
    for _ in range(1000):
        if len(runs) == count:
            break
        body += 7919  # a stride that leaves the low digits varied
        for check in "0123456789":
            candidate = f"{body}{check}"
            if candidate.startswith(first) and luhn_card(candidate):
                runs.append(candidate)
                break
    assert len(runs) == count, f"no {length}-digit card numbers start with {first}"
    return runs


@pytest.mark.parametrize("digits", _luhn_valid_runs("4", 19, 4) + _luhn_valid_runs("51", 16, 3))
def test_a_mime_boundary_as_pythons_email_package_writes_it_is_not_a_card(digits):
    """Every multipart message Python writes separates its parts with "===============<digits>==": a
    run that would pass as a card (issuer prefix, Luhn) there is not one; the same digits elsewhere are."""
    boundary = "===============" + digits + "=="
    text = f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n--{boundary}\nhello\n--{boundary}--\n'
    assert values(detect(text), text) == []
    for elsewhere in (f"card {digits}\n", f"pan={digits}&ok=1", f"<td>{digits}</td>"):
        assert values(detect(elsewhere), elsewhere) == [("CREDIT_CARD", digits)], elsewhere


@settings(max_examples=100)
@given(seed=st.binary(min_size=1, max_size=64), upper=st.booleans())
def test_uuids_and_hex_hashes_produce_no_findings(seed, upper):
    parts = [str(uuid.UUID(bytes=hashlib.md5(seed).digest())), hashlib.md5(seed).hexdigest(),
             hashlib.sha1(seed).hexdigest(), hashlib.sha256(seed).hexdigest()]  # fmt: skip
    text = " ".join(p.upper() if upper else p for p in parts)
    assert detect(text) == []


# --- findings never carry the value --------------------------------------------------------------


def test_no_finding_reveals_the_raw_value_or_its_digits():
    text = "\n".join(template.format(value) for _, template, value in DETECTED)
    findings = detect(text)
    assert {f.type for f in findings} == {kind for kind, _, _ in DETECTED}
    for finding in findings:
        value = text[finding.location.offset : finding.location.offset + finding.location.length]
        dumped = json.dumps(finding.to_dict(), ensure_ascii=False)
        assert value not in dumped
        digits = "".join(ch for ch in value if ch.isdigit())
        if len(digits) >= 6:
            assert digits not in dumped
        compact = "".join(value.split()).replace("-", "")
        assert compact not in dumped
        assert finding.fingerprint == FINGERPRINT(finding.type, value)


def test_the_same_value_matched_by_two_rules_of_one_type_is_reported_once():
    text = "US office +1 415 555 2671 today"
    findings = detect(text)
    assert values(findings, text) == [("PHONE", "+1 415 555 2671")]


def test_locations_are_character_offsets_with_one_based_lines_and_columns():
    text = "first line\n\nthird: 536-22-1234 and jane@example.com\n"
    ssn, mail = detect(text)
    assert (ssn.location.line, ssn.location.column, ssn.location.offset, ssn.location.length) == (
        3,
        8,
        19,
        11,
    )
    assert (mail.location.line, mail.location.column) == (3, 24)
    assert "[" in ssn.excerpt and "536-22-1234" not in ssn.excerpt


# --- packs, disable, custom rules ----------------------------------------------------------------


def test_pack_patterns_are_ascii_and_matched_against_utf8_bytes():
    for pack in ("pii", "secrets"):
        for rule in load_pack(pack):
            assert rule.pattern.isascii() and not rule.unicode, rule.id


def test_packs_define_the_canonical_types_with_namespaced_ids():
    types = {rule.type for pack in ("pii", "secrets") for rule in load_pack(pack)}
    assert types >= {"EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "JP_MY_NUMBER", "AWS_ACCESS_KEY",
                     "GITHUB_TOKEN", "PRIVATE_KEY", "JWT", "AWS_SECRET_KEY", "SLACK_TOKEN", "STRIPE_KEY",
                     "GOOGLE_API_KEY", "AZURE_STORAGE_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GITLAB_TOKEN",
                     "NPM_TOKEN", "PYPI_TOKEN", "SENDGRID_API_KEY", "TWILIO_API_KEY", "HUGGINGFACE_TOKEN",
                     "VAULT_TOKEN", "GENERIC_SECRET", "JP_DRIVERS_LICENSE", "JP_PASSPORT",
                     "JP_BANK_ACCOUNT", "JP_POSTAL_CODE"}  # fmt: skip
    assert all(rule.type == rule.type.upper() for pack in ("pii", "secrets") for rule in load_pack(pack))
    assert all(rule.id.startswith("pii.") for rule in load_pack("pii"))
    assert all(rule.id.startswith("secrets.") for rule in load_pack("secrets"))


def test_only_the_configured_packs_are_loaded():
    text = f"jane@example.com {AWS_KEY_ID}"
    assert values(detect(text, RulesSettings(packs=["secrets"])), text) == [("AWS_ACCESS_KEY", AWS_KEY_ID)]


def test_disabled_rules_are_switched_off_by_id_or_glob():
    text = "jane@example.com, (415) 555-2671, 03-1234-5678, 536-22-1234"
    assert {t for t, _ in values(detect(text, RulesSettings(disable=["pii.email"])), text)} == {
        "PHONE",
        "US_SSN",
    }
    assert {t for t, _ in values(detect(text, RulesSettings(disable=["pii.phone.*"])), text)} == {
        "EMAIL",
        "US_SSN",
    }


def test_disabling_an_unknown_rule_id_is_an_error():
    with pytest.raises(ValueError, match=r"rules\.disable\[0\]: no rule matches 'pii\.emial'"):
        RegexDetector(RulesSettings(disable=["pii.emial"]))


def test_a_custom_rule_with_validator_and_context_words_reports_only_valid_values_near_context():
    rule = CustomRule(id="acme.card_ref", type="CARD_REF", pattern=r"\bREF(\d{16})\b", severity="high",
                      validator="luhn_card", context=["payment", "支払"], context_window=24)  # fmt: skip
    rules = RulesSettings(packs=[], custom=[rule])
    good = "payment REF4111111111111111 ok"
    assert values(detect(good, rules), good) == [("CARD_REF", "REF4111111111111111")]
    findings = detect(good, rules)
    assert findings[0].rule == "acme.card_ref" and findings[0].severity == Severity.HIGH
    assert detect("payment REF4111111111111112 ok", rules) == []  # Luhn fails
    assert detect("unrelated REF4111111111111111 ok", rules) == []  # no context
    assert detect("支払 REF4111111111111111", rules) != []


def test_a_custom_rule_from_the_example_configuration_works():
    rule = CustomRule(id="acme.employee_id", type="EMPLOYEE_ID", pattern=r"\bEMP-\d{6}\b",
                      context=["employee", "社員番号"])  # fmt: skip
    rules = RulesSettings(custom=[rule])
    text = "社員番号：EMP-123456"
    assert values(detect(text, rules), text) == [("EMPLOYEE_ID", "EMP-123456")]


def test_a_custom_rule_with_non_ascii_pattern_matches_the_decoded_text():
    rule = CustomRule(id="acme.staff", type="STAFF_NO", pattern=r"社員番号[:：]\s*[0-9０-９]{6}")
    rules = RulesSettings(packs=[], custom=[rule])
    text = "山田の社員番号：１２３４５６です"
    assert values(detect(text, rules), text) == [("STAFF_NO", "社員番号：１２３４５６")]
    assert load_rules(rules)[0].unicode


def test_a_custom_ignore_case_rule_matches_either_case():
    rule = CustomRule(id="acme.codename", type="CODENAME", pattern=r"\bproject-falcon\b", ignore_case=True)
    text = "see PROJECT-FALCON and project-falcon"
    assert len(detect(text, RulesSettings(packs=[], custom=[rule]))) == 2


def test_an_unknown_validator_name_raises_naming_the_rule():
    rules = RulesSettings(custom=[CustomRule(id="acme.x", type="X", pattern="x+", validator="foo")])
    with pytest.raises(
        ValueError, match=r"rules\.custom\[0\]\.validator: unknown validator 'foo' \(known: .*iban"
    ):
        RegexDetector(rules)


def test_rule_problems_are_setting_errors_that_config_check_reports_by_key():
    custom = [
        CustomRule(id="acme.ok", type="OK", pattern="ok+"),
        CustomRule(id="acme.x", type="X", pattern="x+", validator="foo"),
    ]
    with pytest.raises(SettingError) as caught:
        RegexDetector(RulesSettings(custom=custom))
    assert caught.value.loc == ("rules", "custom", 1, "validator")
    with pytest.raises(SettingError) as caught:
        RegexDetector(RulesSettings(disable=["nope"]))
    assert caught.value.loc == ("rules", "disable", 0)


def test_a_custom_rule_that_can_match_nothing_or_repeats_an_id_is_rejected():
    with pytest.raises(ValueError, match=r"rules\.custom\[0\]\.pattern: .*empty string"):
        RegexDetector(RulesSettings(custom=[CustomRule(id="acme.empty", type="X", pattern="a*")]))
    with pytest.raises(ValueError, match=r"rules\.custom\[0\]\.id: .*'pii\.email' is already used"):
        RegexDetector(RulesSettings(custom=[CustomRule(id="pii.email", type="X", pattern="a+")]))


# --- allow-list ----------------------------------------------------------------------------------

ALLOW_TEXT = (
    "cards 4111 1111 1111 1111 and 5555 5555 5555 4444; mail jane@example.com and bob@corp.example.org"
)


def kinds_and_values(rules: RulesSettings, path: str = "/srv/drop/in/a.txt") -> list[tuple[str, str]]:
    return values(detect(ALLOW_TEXT, rules, path=path), ALLOW_TEXT)


def test_allow_list_values_are_compared_normalised():
    rules = RulesSettings(allow=AllowList(values=["4111111111111111", "JANE@example.com"]))
    assert kinds_and_values(rules) == [
        ("CREDIT_CARD", "5555 5555 5555 4444"),
        ("EMAIL", "bob@corp.example.org"),
    ]


def test_allow_list_fingerprints_suppress_a_value_without_naming_it():
    fingerprint = FINGERPRINT("EMAIL", "bob@corp.example.org")
    rules = RulesSettings(allow=AllowList(fingerprints=[fingerprint.upper()]))
    assert ("EMAIL", "bob@corp.example.org") not in kinds_and_values(rules)
    assert len(kinds_and_values(rules)) == 3


def test_allow_list_patterns_are_searched_in_the_value():
    rules = RulesSettings(allow=AllowList(patterns=[r"@example\.com$", r"^5555"]))
    assert kinds_and_values(rules) == [
        ("CREDIT_CARD", "4111 1111 1111 1111"),
        ("EMAIL", "bob@corp.example.org"),
    ]


def test_allow_list_paths_exempt_matching_files():
    rules = RulesSettings(allow=AllowList(paths=["*/fixtures/*", "/srv/drop/test-*.txt"]))
    assert kinds_and_values(rules, path="/srv/drop/in/fixtures/cards.txt") == []
    assert kinds_and_values(rules, path="/srv/drop/test-1.txt") == []
    assert len(kinds_and_values(rules, path="/srv/drop/in/cards.txt")) == 4


# --- the detector as a plugin --------------------------------------------------------------------


def test_the_plugin_hook_registers_a_conforming_regex_detector():
    registry = Registry()
    dropwarden_register_detectors(
        register=lambda obj: registry.add("detectors", "regex", obj), settings=Settings()
    )
    detector = registry.detectors["regex"]
    assert isinstance(detector, RegexDetector) and isinstance(detector, Detector)
    assert detector.view_kinds == frozenset({"text"})


def test_the_detector_version_names_the_rule_set():
    plain = RegexDetector()
    assert plain.version.startswith("1.0.0+rs.")
    assert RegexDetector().version == plain.version
    assert RegexDetector(RulesSettings(disable=["pii.email"])).version != plain.version
    assert RegexDetector(RulesSettings(allow=AllowList(values=["x"]))).version != plain.version


def test_image_views_and_empty_text_yield_nothing():
    detector = RegexDetector()
    ctx = DetectContext(FINGERPRINT, "/x")
    assert detector.detect(ImageView(name="image", data=b"\x89PNG", format="png"), ctx) == []
    assert detector.detect(TextView(name="text", text="", encoding="utf-8"), ctx) == []
