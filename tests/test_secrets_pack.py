"""The secrets pack, rule by rule (gitleaks style: true positives, near misses, placeholders), and as a
whole on megabytes of ordinary text, code and logs, where it must stay silent."""

from __future__ import annotations

import hashlib
import json
import random
import sysconfig
import uuid
from functools import cache
from pathlib import Path

import pytest

from dropwarden.redact import Fingerprinter
from dropwarden.registry import DetectContext
from dropwarden.views import TextView
from dropwarden_regex import RegexDetector
from dropwarden_regex.detector import UNTAILED_TYPES
from dropwarden_regex.rules import load_pack
from dropwarden_regex.secret_validators import generic_secret, is_placeholder, shannon_entropy
from dropwarden_regex.settings import RulesSettings
from dropwarden_regex.spans import SEGMENT
from tests.secret_samples import COVERED_RULES, mixed, positives, quiet
from tests.test_regex_engine import require_hyperscan

FINGERPRINT = Fingerprinter(b"0123456789abcdef0123456789abcdef")


@cache
def detector(engine: str = "auto") -> RegexDetector:
    return RegexDetector(RulesSettings(engine=engine))


def found(text: str, engine: str = "auto") -> list[tuple[str, str]]:
    """(rule id, matched text) of every finding in `text`."""
    findings = detector(engine).detect(
        TextView("text", text, "utf-8"), DetectContext(FINGERPRINT, "/in/a.txt")
    )
    return [(f.rule, text[f.location.offset : f.location.offset + f.location.length]) for f in findings]


def test_every_rule_of_the_secrets_pack_has_samples_of_its_own():
    assert {rule.id for rule in load_pack("secrets")} == COVERED_RULES


@pytest.mark.parametrize("engine", ["hyperscan", "python"])
@pytest.mark.parametrize(
    ("rule", "text", "span"), positives(), ids=[f"{r}:{i}" for i, (r, _, _) in enumerate(positives())]
)
def test_each_rule_finds_its_true_positives_with_the_value_span(engine, rule, text, span):
    if engine == "hyperscan":
        require_hyperscan()
    assert (rule, span) in found(text, engine)


@pytest.mark.parametrize(("rule", "text"), quiet(), ids=[f"{r}:{i}" for i, (r, _) in enumerate(quiet())])
def test_near_misses_and_placeholders_raise_no_secret(rule, text):
    """Documentation keys (…EXAMPLE), bodies of one repeated character, <your-token>, ${VAR}, ****,
    wrong shapes: no secret rule fires, not the rule they imitate nor any other."""
    assert [hit for hit in found(text) if hit[0].startswith("secrets.")] == []


@pytest.mark.parametrize(
    "text",
    [
        "-----BEGIN RSA PRIVATE KEY-----\nThis is where the key would go; it is not included here.\n"
        "-----END RSA PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----\n" + "x" * 64 + "\n" + "x" * 64 + "\n-----END PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "A" * 70 + "\n-----END OPENSSH PRIVATE KEY-----",
    ],
)
def test_a_private_key_block_without_key_material_is_not_a_key(text):
    assert found(text) == []


def test_the_generic_rule_has_an_entropy_floor_and_ignores_references():
    value = mixed(32)
    assert found(f'api_key = "{value}"') == [("secrets.generic_secret", f'api_key = "{value}"')]
    for quiet_text in ('password = "changeme"', 'api_key = "${API_KEY}"', "password = 'Password1'"):
        assert found(quiet_text) == []
    assert shannon_entropy("aaaa") == 0 and shannon_entropy(value) > 3.5
    assert not generic_secret('token = "' + "ab" * 16 + '"')  # long, but two characters


def test_a_token_a_specific_rule_reports_is_not_reported_again_as_generic():
    token = "ghp_" + mixed(36)
    assert found(f'token = "{token}"') == [("secrets.github_token", token)]


@pytest.mark.parametrize("engine", ["hyperscan", "python"])
def test_a_keyword_assigned_value_with_a_rule_of_its_own_is_reported_once_as_that_type(engine):
    """`aws_secret_access_key = …` and a Kubernetes Secret's `password: …` are keyword-assigned values
    the generic rule would take too: the specific type wins, the generic finding is not raised."""
    if engine == "hyperscan":
        require_hyperscan()
    key = mixed(40)
    assert [rule for rule, _ in found(f"aws_secret_access_key = {key}\n", engine)] == [
        "secrets.aws_secret_key"
    ]
    manifest = "apiVersion: v1\nkind: Secret\ndata:\n  password: " + mixed(24) + "\n"
    assert [rule for rule, _ in found(manifest, engine)] == ["secrets.kubernetes_secret"]
    alone = f'password = "{mixed(24)}"'
    assert [rule for rule, _ in found(alone, engine)] == ["secrets.generic_secret"]


@pytest.mark.parametrize("engine", ["hyperscan", "python"])
def test_the_specific_type_wins_across_the_boundary_of_the_segments_a_view_is_matched_in(engine):
    """Matches come a segment (SEGMENT bytes) at a time: a generic match starting in one segment and the
    specific match inside it in the next, or the other way round, still make one finding."""
    if engine == "hyperscan":
        require_hyperscan()
    custom = {"id": "acme.key", "type": "ACME_KEY", "pattern": r"acme[0-9a-f]{28}"}
    settings = RulesSettings(engine=engine, custom=[custom])
    specific = RegexDetector(settings)
    acme = "acme" + uuid.UUID(int=random.Random(3).getrandbits(128)).hex[:28]
    for line, boundary_after in (
        (f'api_key = "{acme}"', "api_"),
        (f"aws_secret_access_key = {mixed(40)}", "aws_"),
    ):
        text = " " * (SEGMENT - len(boundary_after)) + line + "\n"
        assert text[SEGMENT - len(boundary_after) : SEGMENT] == boundary_after
        findings = specific.detect(TextView("text", text, "utf-8"), DetectContext(FINGERPRINT, "/in/a.txt"))
        assert [f.type for f in findings] in (["ACME_KEY"], ["AWS_SECRET_KEY"]), line


@pytest.mark.parametrize(
    "value",
    [
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_" + "x" * 36,
        "<your-token>",
        "${GITHUB_TOKEN}",
        "****",
        "{{ .Values.key }}",
    ],
)
def test_placeholders_are_recognised(value):
    assert is_placeholder(value)


def test_no_secret_finding_reveals_its_value():
    """The excerpt masks the matched span (its last 4 characters at most stay) and masks digits around it."""
    text = "\n".join(text for _, text, _ in positives())
    findings = detector().detect(TextView("text", text, "utf-8"), DetectContext(FINGERPRINT, "/in/a.txt"))
    assert {f.rule for f in findings} >= {rule for rule, _, _ in positives()}
    for finding in findings:
        span = text[finding.location.offset : finding.location.offset + finding.location.length]
        dumped = json.dumps(finding.to_dict())
        hidden = span.strip()[:-4]
        assert hidden[-12:] not in dumped, finding.rule


# --- the whole pack on ordinary text -------------------------------------------------------------

CORPUS_BYTES = 4_000_000
_SKIPPED_DIRS = frozenset({"test", "tests", "site-packages", "dist-packages"})


def _text_files(root: Path, suffixes: tuple[str, ...], budget: int) -> list[str]:
    """Up to `budget` bytes of the UTF-8 text files under `root`, spread over the whole tree (in the
    order of a hash of their path, so the same files on every run)."""
    out, total = [], 0
    for path in sorted(
        root.rglob("*"), key=lambda p: hashlib.sha256(str(p.relative_to(root)).encode()).digest()
    ):
        if total >= budget:
            break
        if path.suffix not in suffixes or not path.is_file() or _SKIPPED_DIRS.intersection(path.parts):
            continue  # test suites plant credentials on purpose; installed packages vary by machine
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        out.append(text)
        total += len(text)
    return out


def _generated_logs(size: int, seed: int = 7) -> str:
    """Service logs dense in the tokens that look random but are not secrets: UUIDs, request ids,
    hashes, base64 payloads, timestamps, IPs, durations, JSON and key=value fields."""
    rng = random.Random(seed)
    lines, total = [], 0
    levels = ["INFO", "WARN", "DEBUG", "ERROR"]
    while total < size:
        blob = rng.randbytes(rng.randint(12, 90))
        digest = hashlib.sha256(blob).hexdigest()
        line = rng.choice(
            [
                f"2025-03-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
                f"{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z {rng.choice(levels)} request_id={uuid.UUID(int=rng.getrandbits(128))} "
                f"trace={digest[:32]} span={digest[32:48]} latency_ms={rng.randint(1, 9000)}",
                f'{{"ts": {rng.randint(1_600_000_000, 1_800_000_000)}, "event": "upload", "sha256": "{digest}", '
                f'"payload": "{__import__("base64").b64encode(blob).decode()}", "etag": "{hashlib.md5(blob).hexdigest()}"}}',
                f"commit {hashlib.sha1(blob).hexdigest()} Merge: {digest[:7]} {digest[7:14]} session={uuid.UUID(int=rng.getrandbits(128)).hex}",
                f"GET /api/v2/items/{uuid.UUID(int=rng.getrandbits(128))}?page={rng.randint(1, 99)} 200 from "
                f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)} ua=Mozilla/5.0",
                f"  integrity sha512-{__import__('base64').b64encode(hashlib.sha512(blob).digest()).decode()}",
                f"token_count={rng.randint(1, 4096)} cache_key={digest[:40]} password_policy=strict retries={rng.randint(0, 5)}",
            ]
        )
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)


@cache
def ordinary_corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts = _text_files(stdlib, (".py",), CORPUS_BYTES // 2)
    parts += _text_files(Path("/usr/share/doc"), ("", ".txt", ".md", ".rst"), CORPUS_BYTES // 4)
    parts.append(_generated_logs(CORPUS_BYTES // 4))
    return parts


def test_the_full_pack_raises_nothing_on_megabytes_of_ordinary_text_code_and_logs():
    """Python's standard library sources, the system's documentation and generated logs full of UUIDs,
    hashes and base64: a rule that fires here is a noisy rule."""
    parts = ordinary_corpus()
    assert sum(map(len, parts)) >= CORPUS_BYTES * 0.6  # the stdlib alone provides the most of it
    noise = [
        (rule, len(value)) for text in parts for rule, value in found(text) if rule.startswith("secrets.")
    ]
    assert noise == []


def test_findings_that_end_in_a_password_show_no_tail_of_it():
    """Masks keep the last 4 characters of a long value, which for a token is a harmless hint; for a
    .netrc line, a URL's user info or `password = "…"` they would be the password's own last characters."""
    untailed = [(rule, text) for rule, text, _ in positives() if load_rule_type(rule) in UNTAILED_TYPES]
    assert {load_rule_type(rule) for rule, _ in untailed} == UNTAILED_TYPES
    for rule, text in untailed:
        findings = detector().detect(TextView("text", text, "utf-8"), DetectContext(FINGERPRINT, "/in/a"))
        (finding,) = [f for f in findings if f.rule == rule]
        assert "[******]" in finding.excerpt, rule


def load_rule_type(rule_id: str) -> str:
    return next(rule.type for rule in load_pack("secrets") if rule.id == rule_id)


@pytest.mark.parametrize("engine", ["hyperscan", "python"])
def test_a_gitlab_token_whose_url_safe_body_is_cut_by_dashes_and_underscores_is_found(engine):
    """GitLab bodies are URL-safe base64: no alphanumeric run of this one is longer than 6 characters,
    and the token is random all the same (the benchmark's seeded token that was once missed)."""
    if engine == "hyperscan":
        require_hyperscan()
    text = "  private_token: glpat-M_ACCkC9-cJ0LER-18-y\n"
    assert ("secrets.gitlab_token", "glpat-M_ACCkC9-cJ0LER-18-y") in found(text, engine)
    assert found("  private_token: glpat-a_bbbbbb-cccccc-dd-e\n", engine) == []
