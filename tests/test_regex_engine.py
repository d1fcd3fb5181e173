"""Matching engines of the regex plugin: hyperscan prefilter + confirmation equals plain Python re."""

from __future__ import annotations

import bisect
import functools
import os
import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropwarden.redact import Fingerprinter
from dropwarden.registry import DetectContext
from dropwarden.views import TextView
from dropwarden_regex import RegexDetector, engine
from dropwarden_regex.engine import PythonEngine, build_engine
from dropwarden_regex.hyperscan_engine import HyperscanEngine
from dropwarden_regex.rewrite import UnsupportedSyntax, prefilter_expression
from dropwarden_regex.rules import load_rules
from dropwarden_regex.settings import CustomRule, RulesSettings
from dropwarden_regex.spans import CharCursor, finish
from dropwarden_regex.validators import luhn_check_digit, my_number_check_digit
from tests import secret_samples


def require_hyperscan():
    """Skip when hyperscan is missing, except in CI (CI=true), where a missing hyperscan must fail."""
    try:
        import hyperscan  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail("hyperscan is not importable, and CI requires the hyperscan engine to be tested")
        pytest.skip("hyperscan is not installed")


def hyperscan_engine(rules):
    require_hyperscan()
    return build_engine(rules, "hyperscan", 512)


CUSTOM = [
    CustomRule(id="acme.employee", type="EMPLOYEE_ID", pattern=r"\bEMP-\d{4,8}\b", context=["employee"]),
    CustomRule(
        id="acme.codename", type="CODENAME", pattern=r"project[ _-]?(falcon|osprey)", ignore_case=True
    ),
    CustomRule(id="acme.staff", type="STAFF_NO", pattern=r"社員番号[:：]?\s*[0-9０-９]{4,6}"),
    CustomRule(id="acme.ascii", type="ASCII_FLAG", pattern=r"(?a)ref#\w{3,5}"),  # hyperscan rejects (?a)
    CustomRule(id="acme.tail", type="TAIL", pattern=r"(?<=key=)[A-Z]{4}\d{2}(?=;)"),
]
RULES = load_rules(RulesSettings(custom=CUSTOM))


def span_values(spans, text):
    return [(RULES[index].id, text[start:end]) for index, start, end in spans]


# --- a corpus rich in near-misses ----------------------------------------------------------------


def _card(prefix: str, length: int, rng: random.Random) -> str:
    payload = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return payload + luhn_check_digit(payload)


def _my_number(rng: random.Random) -> str:
    first = "".join(rng.choice("0123456789") for _ in range(11))
    return first + str(my_number_check_digit(first))


FRAGMENTS = [
    "jane.doe@example.com", "a@b.co", "x@2x.png", "@@", "user@", "(415) 555-2671", "415-555-2671",
    "+1 415 555 2671", "+14155552671", "03-1234-5678", "090-1234-5678", "(03)1234-5678", "0120-123-456",
    "+81 90 1234 5678", "4111 1111 1111 1111", "4111-1111-1111-1111", "378282246310005", "3782 822463 10005",
    "536-22-1234", "000-12-3456", "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "123456789018",
    "1234 5678 9018", "マイナンバー", "個人番号", "My Number", "AKIAIOSFODNN7EXAMPLE", "ASIA", "ghp_",
    "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "github_pat_",
    "github_pat_11ABCDEFG0123456789abc_xxxxxxxxxxxxxxxxxxxxYYYYYYYYYYYYYYYYYYYY0123456789abcdefghi",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBYr9Xv1pD8b2Q0hPcbPn8vZfV1Jb0mZK4VqL1fQk9AboAoGCCqGSM49\n-----END EC PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----\n",
    "-----END RSA PRIVATE KEY-----", "-----BEGIN OPENSSH PRIVATE KEY-----\\n",
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n",
    "eyJhbGciOiJIUzI1NiJ9", ".eyJzdWIiOiIxIn0", ".c2lnbmF0dXJl", "EMP-123456", "employee", "Project Falcon",
    "社員番号：１２３４５６", "ref#abc1", "key=ABCD12;", "123e4567-e89b-12d3-a456-426614174000",
    "9f86d081884c7d659a2feaea0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0", "1700000000123", "9784061234567",
    "2024-05-17", "3.14159", "é", "日本語", "０３－１２３４－５６７８", "（０３）１２３４－５６７８", "０９０ー１２３４ー５６７８",
    "１２３４　５６７８　９０１８", "１２３４５６７８９０１８", "２０２４年", "－", "　", "\udc80", "\n", "\r\n", "\t", " ", "-", ".", "(", ")", "+", "_",
]  # fmt: skip
FRAGMENTS += [  # the pii pack's later families and shapes
    "+44 (0)20 7123 4567", "+90 (532) 123 45 67", "+44 (20) 7123 4567", "(0)", "078 05 1123", "078.05.1123",
    "SSN", "social security", "LI21 0881 0000 2324 013A A", "AL47-2121-1009-0000-0002-3569-8741",
    "a@xn--d1acufc.xn--p1ai", "ref 12 4012-8888-8888-1881", "5019717010103742", "301912345680",
    "3019 1234 5680", "運転免許証", "TK1234567", "旅券", "passport", "1234567", "口座", "銀行", "1234567円",
    "〒", "100-0001", "郵便番号",
]  # fmt: skip
# every rule of the secrets pack: its true positives, near misses and placeholders
SECRET_FRAGMENTS = secret_samples.fragments()
ALPHABET = "0123456789 -.()+@_:AKIZeyJghp\nx"

corpus = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS), st.sampled_from(SECRET_FRAGMENTS), st.text(alphabet=ALPHABET, max_size=10)
    ),
    max_size=60,
).map("".join)


def seeded_corpus(seed: int, size: int) -> str:
    rng = random.Random(seed)
    parts = [part + "\n" for part in rng.sample(SECRET_FRAGMENTS, len(SECRET_FRAGMENTS))]  # each once first
    total = sum(map(len, parts))
    while total < size:
        roll = rng.random()
        if roll < 0.25:
            part = rng.choice(FRAGMENTS)
        elif roll < 0.3:
            part = rng.choice(SECRET_FRAGMENTS)
        elif roll < 0.35:
            part = _card(rng.choice(["4", "51", "34", "6011", "3530", "62"]), rng.choice([15, 16, 19]), rng)
            if rng.random() < 0.5:
                part = " ".join(part[i : i + 4] for i in range(0, len(part), 4))
        elif roll < 0.4:
            part = _my_number(rng)
        elif roll < 0.5:  # dense digit runs with separators: many prefilter hits, merged regions
            part = "".join(rng.choice("0123456789 -") for _ in range(rng.randint(10, 400)))
        else:
            part = " ".join(
                rng.choice(["the", "report", "account", "番号", "total", "id", "no."]) for _ in range(8)
            )
        parts.append(part + rng.choice([" ", "\n", ", ", "", ": "]))
        total += len(part)
    return "".join(parts)


# --- engine equivalence --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["fast", "precise"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=corpus)
def test_hyperscan_and_python_engines_find_the_same_matches_on_random_text(path, text):
    require_hyperscan()
    data = TextView(name="t", text=text, encoding="utf-8").utf8
    assert engine_on_path(path).scan(data, text) == PythonEngine(RULES).scan(data, text)


@functools.cache
def engine_on_path(path: str) -> HyperscanEngine:
    """A private hyperscan engine forced onto one path: "fast" (shared triggers, never overflowing)
    or "precise" (the first trigger hit overflows, so every view is rescanned with the rules' own
    prefilter expressions)."""
    hs_engine = HyperscanEngine(RULES, 512)
    hs_engine.trigger_budget = (1 << 40, 1) if path == "fast" else (0, 1 << 40)
    return hs_engine


@pytest.mark.parametrize("path", ["fast", "precise"])
@pytest.mark.parametrize("seed", range(4))
def test_hyperscan_and_python_engines_find_the_same_matches_on_a_large_seeded_corpus(seed, path):
    require_hyperscan()
    text = seeded_corpus(seed, 120_000)
    data = text.encode("utf-8", "surrogatepass")
    expected = PythonEngine(RULES).scan(data, text)
    assert len(expected) > 100
    assert engine_on_path(path).scan(data, text) == expected


@pytest.mark.parametrize("path", ["fast", "precise"])
def test_every_match_of_every_rule_holds_a_prefilter_hit(path):
    """The contract of `trigger` and `prefilter` in the packs: every real match contains a hit
    (start <= hit <= end, and hit <= start + hit_back where a rule declares it); where a rule has no
    prefilter, its own pattern reports every match end."""
    require_hyperscan()
    hs_engine = engine_on_path(path)
    text = seeded_corpus(99, 200_000)
    data = text.encode("utf-8", "surrogatepass")
    hits = hs_engine.prefilter_hits(data, precise=path == "precise")
    for index, rule in enumerate(RULES):
        if index in hs_engine.fallback:
            continue
        spans = [m.span() for m in rule.regex.finditer(data)]
        assert spans, rule.id
        if not rule.prefilter and not rule.trigger:
            assert {end for _, end in spans} <= hits[index], rule.id
            continue
        ordered = sorted(hits[index])
        for start, end in spans:
            last = min(end, start + rule.hit_back) if rule.hit_back else end  # and no further than hit_back
            first = bisect.bisect_left(ordered, start)
            assert first < len(ordered) and ordered[first] <= last, (rule.id, data[start:end])


def test_numeric_text_overflows_the_shared_trigger_and_is_rescanned_precisely():
    require_hyperscan()
    hs_engine = build_engine(RULES, "hyperscan", 512)
    log = "".join(
        f"2024-05-17 12:{i % 60:02d}:00 GET /items/{10000 + i} 200 {i % 9000 + 1000}ms\n" for i in range(3000)
    )
    log += "contact (415) 555-2671\n"
    data = log.encode()
    assert hs_engine.scan_path(data) == "precise"
    assert hs_engine.scan_path(b"plain prose, call (415) 555-2671 today") == "fast"
    assert span_values(hs_engine.scan(data, log), log) == [("pii.phone.nanp", "(415) 555-2671")]
    assert hs_engine.scan(data, log) == PythonEngine(RULES).scan(data, log)


def test_a_view_dense_from_its_start_skips_the_fast_database_and_a_later_dense_one_abandons_it():
    """The probe of the triggers over the first bytes decides the first case; the fast scan's own
    budget the second: both end on the precise database, with the whole-text matches."""
    require_hyperscan()
    hs_engine = HyperscanEngine(RULES, 512)
    log = "".join(f"2024-05-17 12:{i % 60:02d}:00 GET /items/{10000 + i} 200\n" for i in range(3000))
    prose = "plain prose about the weather and nothing else at all\n" * 400  # past the probe's bytes
    for text, probed in ((log + "contact (415) 555-2671\n", True), (prose + log, False)):
        data = text.encode()
        assert hs_engine._clearly_dense(data) is probed
        assert hs_engine.scan_path(data) == "precise"
        assert hs_engine.scan(data, text) == PythonEngine(RULES).scan(data, text)


@pytest.mark.parametrize("path", ["fast", "precise"])
def test_context_rules_are_found_near_their_words_on_either_path_and_nowhere_else(path):
    """Rules that need a context word are scanned, on the precise path, only around their words' hits:
    each must still be found beside its own word, in text where no other rule's word is near."""
    require_hyperscan()
    hs_engine = engine_on_path(path)
    context_rules = {index for index, rule in enumerate(RULES) if rule.context}
    assert context_rules and not context_rules & set(hs_engine._precise.rule_expressions)
    filler = "".join(f"2024-05-17 12:{i % 60:02d}:00 GET /items/{10000 + i} 200\n" for i in range(300))
    beside_words = [
        "SSN 078 05 1123", "マイナンバー 1234 5678 9018", "個人番号：１２３４５６７８９０１８",
        "運転免許証 301912345680", "口座番号 7654321", "〒100-0001", "旅券番号 TK1234567",
    ]  # fmt: skip
    far_from_words = "078 05 1123 and 1234 5678 9018 and 301912345680 and 7654321 and 100-0001\n"
    text = filler + filler.join(f"{line}\n" for line in beside_words) + filler + far_from_words
    data = text.encode()
    found = hs_engine.scan(data, text)
    assert found == PythonEngine(RULES).scan(data, text)
    found_types = {RULES[index].type for index, *_ in found if index in context_rules}
    assert {
        "US_SSN",
        "JP_MY_NUMBER",
        "JP_DRIVERS_LICENSE",
        "JP_BANK_ACCOUNT",
        "JP_POSTAL_CODE",
    } <= found_types
    assert not [span for span in found if span[1] >= len(text) - len(far_from_words)]


def test_the_detector_reports_the_same_findings_with_either_engine():
    require_hyperscan()
    text = seeded_corpus(7, 150_000) + "\nemployee EMP-123456\n"
    ctx = DetectContext(Fingerprinter(b"k" * 32), "/srv/drop/x.txt")
    view = TextView(name="text", text=text, encoding="utf-8")
    with_hyperscan = RegexDetector(RulesSettings(custom=CUSTOM, engine="hyperscan"))
    with_python = RegexDetector(RulesSettings(custom=CUSTOM, engine="python"))
    assert with_hyperscan.engine.name == "hyperscan" and with_python.engine.name == "python"
    findings = with_hyperscan.detect(view, ctx)
    assert len({f.type for f in findings}) >= 9
    assert findings == with_python.detect(view, ctx)


def test_the_python_engine_alone_detects_every_type():
    text = "\n".join(FRAGMENTS[:40]) + "\n" + seeded_corpus(3, 5000)
    detector = RegexDetector(RulesSettings(engine="python"))
    found = {
        f.type
        for f in detector.detect(TextView("text", text, "utf-8"), DetectContext(Fingerprinter(b"k" * 32)))
    }
    assert {"EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "AWS_ACCESS_KEY", "GITHUB_TOKEN"} <= found


def test_a_long_private_key_beyond_max_match_length_is_found_whole_by_both_engines():
    rng = random.Random(5)  # key material, not a placeholder body (xxxx lines are not a key)
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = "\n".join("MIIJKQIBAAKCAgEA" + "".join(rng.choices(b64, k=48)) for _ in range(50))
    text = f"id_rsa:\n-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\ntrailer"
    data = text.encode()
    spans = PythonEngine(RULES).scan(data, text)
    assert hyperscan_engine(RULES).scan(data, text) == spans
    (index, start, end), *_ = spans
    assert RULES[index].type == "PRIVATE_KEY" and text[start:end].endswith("END RSA PRIVATE KEY-----")
    assert end - start > 3000


def test_rules_hyperscan_cannot_compile_fall_back_to_python_one_by_one():
    hs_engine = hyperscan_engine(RULES)
    fallback = {RULES[index].id for index in hs_engine.fallback}
    assert fallback == {"acme.ascii", "acme.staff"}  # (?a) is Python-only; non-ASCII rules match decoded text
    text = "ref#ab_1 and 社員番号：１２３４５６ and ref#xyz"
    data = text.encode()
    assert span_values(hs_engine.scan(data, text), text) == [
        ("acme.ascii", "ref#ab_1"),
        ("acme.staff", "社員番号：１２３４５６"),
        ("acme.ascii", "ref#xyz"),
    ]


def test_concurrent_scans_from_several_threads_agree():
    hs_engine = hyperscan_engine(RULES)
    texts = [seeded_corpus(seed, 30_000) for seed in range(4)]
    expected = [PythonEngine(RULES).scan(t.encode("utf-8", "surrogatepass"), t) for t in texts]
    results: dict[int, list] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = hs_engine.scan(texts[i].encode("utf-8", "surrogatepass"), texts[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(4)] == expected


# --- engine selection ----------------------------------------------------------------------------


def test_auto_selects_hyperscan_when_it_is_importable():
    require_hyperscan()
    assert build_engine(RULES, "auto").name == "hyperscan"


def test_auto_falls_back_to_python_and_an_explicit_hyperscan_is_an_error_without_the_module(monkeypatch):
    monkeypatch.setattr(engine, "hyperscan_available", lambda: False)
    assert build_engine(RULES, "auto", 512).name == "python"
    with pytest.raises(ValueError, match=r"rules\.engine: 'hyperscan' is configured but .* not importable"):
        build_engine(RULES, "hyperscan", 777)


def test_engines_are_cached_by_rule_set():
    assert build_engine(RULES, "python") is build_engine(list(RULES), "python")
    assert RegexDetector().engine is RegexDetector().engine


def test_rules_that_differ_only_in_context_words_get_their_own_engine():
    def detector(word: str) -> RegexDetector:
        rule = CustomRule(id="acme.ref", type="REF", pattern=r"\bREF-\d{4}\b", context=[word])
        return RegexDetector(RulesSettings(packs=[], custom=[rule]))

    text = "invoice REF-1234"
    view, ctx = TextView("text", text, "utf-8"), DetectContext(Fingerprinter(b"k" * 32))
    assert [f.type for f in detector("invoice").detect(view, ctx)] == ["REF"]
    assert detector("order").detect(view, ctx) == []


# --- building blocks -----------------------------------------------------------------------------


def test_prefilter_expressions_drop_lookarounds_and_comments_and_widen_large_repeats():
    assert prefilter_expression(r"(?<![0-9])\d{4}(?=[a-z])x") == r"\d{4}x"
    assert prefilter_expression(r"a(?<!b[)(])c(?!d\)e)f") == "acf"
    assert prefilter_expression(r"[(?=]x{,3}y{2,5000}z{300,400}") == "[(?=]x{0,3}y{2,}z{255,}"
    assert prefilter_expression("(?x) a  # (?=comment\n b", verbose=True) == "(?x) a  \n b"
    with pytest.raises(UnsupportedSyntax):
        prefilter_expression(r"[[:alpha:]]+")


def test_byte_offsets_are_converted_to_character_offsets():
    text = "aé日\udc80😀b"
    data = text.encode("utf-8", "surrogatepass")
    cursor = CharCursor(data, text)
    assert [cursor.at(b) for b in (0, 1, 3, 6, 9, 13, 14)] == [0, 1, 2, 3, 4, 5, 6]
    assert cursor.at(2) == 1 and cursor.at(2, round_up=True) == 2  # inside "é"
    spans = finish(data, text, [(0, 3, 6), (1, 9, 14)], [(2, 0, 1)])
    assert spans == [(2, 0, 1), (0, 2, 3), (1, 4, 6)]


def test_the_cursor_converts_offsets_in_any_order_from_its_marks():
    rnd = random.Random(11)
    text = "".join(rnd.choice(["a", "é", "日", "\udc80", "😀", "\n"]) for _ in range(60_000))
    data = text.encode("utf-8", "surrogatepass")
    cursor = CharCursor(data, text)
    for offset in [rnd.randrange(len(data) + 1) for _ in range(300)] + [len(data), 0, 5, len(data) // 2]:
        while 0 < offset < len(data) and data[offset] & 0xC0 == 0x80:
            offset -= 1
        assert cursor.at(offset) == len(data[:offset].decode("utf-8", "surrogatepass"))


def test_ascii_text_needs_no_offset_conversion():
    text = "plain ascii"
    assert finish(text.encode(), text, [(0, 6, 11)], []) == [(0, 6, 11)]


@pytest.mark.parametrize(
    "text",
    [
        "ﬁndividual number 123456789018",  # "ﬁ" case-folds to "fi": the folded text holds the word
        "MY NUMBER: 1234 5678 9018 and later ＭＹ ＮＵＭＢＥＲ 123456789018",
        "個人番号は１２３４５６７８９０１８、my_number=123456789018",
    ],
)
def test_context_words_are_found_as_casefold_finds_them(text):
    require_hyperscan()
    data = text.encode("utf-8")
    expected = PythonEngine(RULES).scan(data, text)
    assert expected or "ＭＹ" in text
    for path in ("fast", "precise"):
        assert engine_on_path(path).scan(data, text) == expected


@pytest.mark.parametrize("kind", ["python", "hyperscan"])
def test_engines_return_only_matches_their_validator_accepts(kind):
    if kind == "hyperscan":
        require_hyperscan()
    text = "tracking 4111111111111112 card 4111111111111111 ＳＳＮ 000-12-3456 ssn 123-45-6789"
    spans = build_engine(RULES, kind).scan(text.encode(), text)
    assert [(RULES[i].id, text[s:e]) for i, s, e in spans] == [
        ("pii.credit_card", "4111111111111111"),
        ("pii.us_ssn", "123-45-6789"),
    ]


@pytest.mark.parametrize("segment", [997, 8192])
@pytest.mark.parametrize("path", ["fast", "precise", "dense"])
def test_a_view_matched_a_segment_at_a_time_gives_the_whole_text_matches(segment, path):
    """Segments of any size, on every path (dense: each segment's rules scanned group by group), give
    what one `finditer` over the whole view gives: no match lost or doubled where segments meet."""
    require_hyperscan()
    hs_engine = HyperscanEngine(RULES, 512)
    hs_engine.trigger_budget = (1 << 40, 1) if path == "fast" else (0, 1 << 40)
    hs_engine.dense_budget = (0, 1 << 40) if path == "dense" else (1 << 40, 1)
    hs_engine.segment = segment
    python_engine = PythonEngine(RULES)
    python_engine.segment = segment
    for seed in (3, 4):
        text = seeded_corpus(seed, 60_000)
        data = text.encode("utf-8", "surrogatepass")
        expected = PythonEngine(RULES).scan(data, text)
        batches = list(hs_engine.scan_batches(data, text))
        assert len(batches) == -(-len(data) // segment)
        assert [span for batch in batches for span in batch] == expected
        assert python_engine.scan(data, text) == expected


@pytest.mark.parametrize("kind", ["python", "hyperscan"])
def test_rules_marked_done_are_not_matched_in_later_batches(kind):
    if kind == "hyperscan":
        require_hyperscan()
    scanner = build_engine(RULES, kind) if kind == "python" else HyperscanEngine(RULES, 512)
    scanner.segment = 4096
    card = next(i for i, rule in enumerate(RULES) if rule.id == "pii.credit_card")
    text = "card 4111 1111 1111 1111, mail taro@example.jp\n" * 1000
    data = text.encode()
    done: set[int] = set()
    seen = []
    for batch in scanner.scan_batches(data, text, done):
        seen.append({RULES[index].type for index, _, _ in batch})
        done.add(card)
    assert seen[0] == {"CREDIT_CARD", "EMAIL"} and all(types == {"EMAIL"} for types in seen[1:])


# --- the quick answer for clean views --------------------------------------------------------------

DEFAULT_RULES = load_rules(RulesSettings())


@functools.cache
def default_hyperscan() -> HyperscanEngine:
    require_hyperscan()
    return HyperscanEngine(DEFAULT_RULES, 512)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=corpus)
def test_a_view_the_engine_calls_surely_clean_has_no_match_of_any_rule(text):
    data = TextView(name="t", text=text, encoding="utf-8").utf8
    if default_hyperscan().surely_clean(data):
        assert PythonEngine(DEFAULT_RULES).scan(data, text) == []


def test_surely_clean_answers_for_names_and_clean_files_and_never_where_a_rule_matches():
    hs_engine, reference = default_hyperscan(), PythonEngine(DEFAULT_RULES)
    matched = 0
    for fragment in FRAGMENTS + SECRET_FRAGMENTS:
        data = TextView(name="t", text=fragment, encoding="utf-8").utf8
        if reference.scan(data, fragment):
            matched += 1
            assert not hs_engine.surely_clean(data), fragment
    assert matched > 100
    clean = (b"Weekly status: all systems nominal, nothing to report.\n" * 80)[:4096]
    assert hs_engine.surely_clean(b"weekly-report-final.txt") and hs_engine.surely_clean(clean)
    assert not hs_engine.surely_clean(clean * (hs_engine.segment // len(clean) + 1))  # over one segment
    assert not hyperscan_engine(RULES).surely_clean(b"nothing here")  # some of RULES fall back to Python
    assert not PythonEngine(DEFAULT_RULES).surely_clean(b"nothing here")
