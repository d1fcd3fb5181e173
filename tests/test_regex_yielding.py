"""A yielding rule's regions inside another rule's matches are not confirmed: the findings stay exact."""

from __future__ import annotations

import random

import pytest

from dropwarden.redact import Fingerprinter
from dropwarden.registry import DetectContext
from dropwarden.views import TextView
from dropwarden_regex import RegexDetector
from dropwarden_regex.engine import PythonEngine
from dropwarden_regex.hyperscan_engine import HyperscanEngine
from dropwarden_regex.settings import RulesSettings
from tests import secret_samples
from tests.test_regex_engine import require_hyperscan

CTX = DetectContext(Fingerprinter(b"k" * 32), "/srv/drop/config.txt")
FILLER = "the build ran at noon; nothing to see here, moving on to the next step of the job\n"


def overlapping_text(seed: int) -> str:
    """Every secret sample (most keyword-assigned, so the generic rule's hits fall inside them), generic
    secrets of their own, and placeholders, in a seeded order, with filler of random length between."""
    rnd = random.Random(seed)
    parts = [text for _, text, _ in secret_samples.positives()]
    parts += [text for _, text in secret_samples.quiet()]
    parts += [f'api_key = "{secret_samples.mixed(24)}"', f"password: '{secret_samples.mixed(16)}'"]
    parts += [f'token = "{secret_samples.mixed(20)}" ghp_{secret_samples.mixed(36)}']  # side by side
    rnd.shuffle(parts)
    return "".join(f"{part}\n{FILLER[: rnd.randrange(len(FILLER))]}" for part in parts)


def findings(detector: RegexDetector, text: str) -> list[tuple]:
    found = detector.detect(TextView(name="text", text=text, encoding="utf-8"), CTX)
    return [(f.type, f.rule, f.location.offset, f.location.length, f.fingerprint, f.excerpt) for f in found]


@pytest.fixture(scope="module")
def detectors() -> tuple[RegexDetector, RegexDetector]:
    require_hyperscan()
    with_hyperscan = RegexDetector(RulesSettings(engine="hyperscan"))
    with_hyperscan.engine = HyperscanEngine(with_hyperscan.rules)  # its own: the segment is changed below
    return with_hyperscan, RegexDetector(RulesSettings(engine="python"))


@pytest.mark.parametrize("segment", [1 << 20, 4096, 1024, 333])
@pytest.mark.parametrize("shift", [0, 17, 130])
def test_skipped_regions_leave_the_findings_as_the_whole_text_scan_makes_them(detectors, segment, shift):
    """Small segments put their boundaries through the samples at many offsets (`shift` moves them)."""
    with_hyperscan, with_python = detectors
    with_hyperscan.engine.segment = segment
    text = FILLER[:shift] + overlapping_text(segment + shift)
    expected = findings(with_python, text)
    assert {"GENERIC_SECRET", "GITHUB_TOKEN", "AWS_SECRET_KEY"} <= {f[0] for f in expected}
    assert findings(with_hyperscan, text) == expected
    found = with_hyperscan.detect(TextView(name="text", text=text, encoding="utf-8"), CTX)
    for f in found:  # every finding on its own line and column, the held ones too
        offset = f.location.offset
        assert f.location.line == text.count("\n", 0, offset) + 1
        assert f.location.column == offset - text.rfind("\n", 0, offset)


def test_the_generic_rule_is_not_confirmed_inside_a_specific_match(detectors):
    """The engine leaves out a generic match that a specific match overlaps (the detector would drop
    it), and keeps the one beside it; a specific candidate its validator rejects covers nothing."""
    with_hyperscan, _ = detectors
    with_hyperscan.engine.segment = 1 << 20
    rules, yielding = with_hyperscan.rules, with_hyperscan.yielding
    aws, alone = secret_samples.mixed(40, secret_samples.B64), secret_samples.mixed(24)
    apart = FILLER * 6  # further apart than a window: each hit is a region of its own
    text = f'aws_secret_access_key = "{aws}"\n{apart}client_secret = "{alone}"\n{apart}token = "ghp_{"x" * 36}"\n'
    data = text.encode()

    def values(rule_id: str, spans: list) -> list[str]:
        return [text[start:end].split(" = ")[0] for index, start, end in spans if rules[index].id == rule_id]

    every = PythonEngine(rules).scan(data, text)
    scanned = [
        span for batch in with_hyperscan.engine.scan_batches(data, text, (), yielding) for span in batch
    ]
    assert with_hyperscan.engine.scan(data, text) == every  # asked for every match, it gives every match
    assert values("secrets.generic_secret", every) == ["access_key", "client_secret"]
    assert values("secrets.generic_secret", scanned) == ["client_secret"]
    assert values("secrets.aws_secret_key", scanned) == values("secrets.aws_secret_key", every) != []
    assert [rule for _, rule, *_ in findings(with_hyperscan, text)] == [
        "secrets.aws_secret_key",
        "secrets.generic_secret",
    ]


def test_a_held_generic_finding_is_placed_on_its_own_line(detectors):
    """A yielding rule's match is held until the matches after it are taken: its line and column are
    still its own (they were once those of the last finding before it was taken)."""
    with_hyperscan, with_python = detectors
    with_hyperscan.engine.segment = 1 << 20
    text = f'x\npassword = "{secret_samples.mixed(18)}"\n\n\nmail bob@example.com here\n'
    for detector in (with_hyperscan, with_python):
        found = detector.detect(TextView(name="text", text=text, encoding="utf-8"), CTX)
        assert [(f.type, f.location.line, f.location.column) for f in found] == [
            ("GENERIC_SECRET", 2, 1),
            ("EMAIL", 5, 6),
        ]
