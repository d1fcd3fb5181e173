"""SIEM formats (ECS, CEF, OCSF): complete, parseable back, and no file name can break or inject a field."""

from __future__ import annotations

import json
import re

import pytest
from py_ocsf_models.events.findings.detection_finding import DetectionFinding

from dropwarden.findings import Finding, Severity
from dropwarden.judge.names import display_name
from dropwarden_actions.formats import render
from dropwarden_actions.formats.cef import CUSTOM_STRINGS

from .alert_samples import SECRET_CARD, card_finding, sample_alert

SECRET = SECRET_CARD

# Names an attacker can give a file dropped in a watched folder (invalid UTF-8 as the daemon shows it).
HOSTILE_NAMES = [
    "evil\nCEF:0|x|y|1|2|3|10|act=deleted",
    "pipe|name|sev|10|",
    "eq act=deleted fname=other.txt",
    'sd]close" inj="1"',
    "back\\slash\\",
    display_name(b"bad-\xff\xfe-utf8.txt"),
    "x" * 251 + ".txt",
    "tab\tcr\rnul\x00end",
]


def finding(kind: str, severity: Severity, detector: tuple[str, str] = ("regex", "1")) -> Finding:
    return card_finding(kind, severity, detector=detector)


def payload(name: str = "scan.txt", findings: tuple[Finding, ...] | None = None) -> dict:
    if findings is None:
        findings = (finding("CARD", Severity.HIGH), finding("EMAIL", Severity.LOW, ("pii", "2.1")))
    head = {"log_id": "log-1", "seq": 42, "hash": "h" * 64}
    return sample_alert(path=f"/srv/inbox/{name}", findings=findings, audit_head=head)


# ------------------------------------------------------------------------ a CEF reader, from the spec

CEF_HEADER = re.compile(r"^CEF:0((?:\|(?:[^|\\]|\\.)*){6})\|(.*)$", re.S)
CEF_KEY = re.compile(r"(?:^| )([A-Za-z0-9_]+)=")


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """Header fields (unescaped) and extension pairs: a key starts where ` key=` follows an unescaped
    character, as ArcSight's parser reads it."""
    match = CEF_HEADER.match(line)
    assert match, line
    header = [re.sub(r"\\(.)", r"\1", f) for f in re.findall(r"\|((?:[^|\\]|\\.)*)", match.group(1))]
    extension = match.group(2)
    starts = [m for m in CEF_KEY.finditer(extension) if not _escaped(extension, m.start(1) - 1)]
    pairs: dict[str, str] = {}
    for i, key_match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(extension)
        raw = extension[key_match.end() : end]
        assert key_match.group(1) not in pairs, f"key {key_match.group(1)} twice: {line!r}"
        pairs[key_match.group(1)] = re.sub(
            r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), raw
        )
    return header, pairs


def _escaped(text: str, index: int) -> bool:
    """Whether the character before `index`'s `=`-key is preceded by an odd run of backslashes."""
    count = 0
    while index >= 0 and text[index] == "\\":
        count, index = count + 1, index - 1
    return count % 2 == 1


def expected_in_cef(name: str) -> str:
    """A name as CEF carries it: CR and LF escaped (so exact), other control characters U+FFFD."""
    return re.sub(r"[\x00-\x09\x0b\x0c\x0e-\x1f]", "\ufffd", name)


# ------------------------------------------------------------------------ ECS


def test_ecs_completes_the_payload_with_rule_file_host_and_event_fields():
    document = json.loads(render("ecs", payload("report.pdf")))
    assert document["rule"] == {
        "id": ["card", "email"],
        "name": ["card", "email"],
        "version": ["1", "2.1"],
        "category": ["CARD", "EMAIL"],
        "ruleset": "dropwarden",
    }
    assert document["file"]["directory"] == "/srv/inbox" and document["file"]["extension"] == "pdf"
    assert document["file"]["hash"]["sha256"] == "ab" * 32
    assert document["host"]["name"] == document["host"]["hostname"]
    assert document["event"]["module"] == "dropwarden" and document["event"]["dataset"] == "dropwarden.alert"
    assert document["event"]["id"] == "alert-1" and document["event"]["severity"] == 73


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_ecs_is_one_ascii_line_that_gives_back_any_hostile_name_exactly(name: str):
    text = render("ecs", payload(name))
    assert text.isascii() and "\n" not in text and "\r" not in text
    assert json.loads(text)["file"]["name"] == name


# ------------------------------------------------------------------------ CEF


def test_cef_has_the_seven_header_fields_and_the_standard_extension_keys():
    header, pairs = parse_cef(render("cef", payload("scan.txt")))
    assert header == [
        "dropwarden",
        "dropwarden",
        header[2],
        "finding",
        "dropwarden finding: CARD, EMAIL",
        "8",
    ]
    assert pairs["fname"] == "scan.txt" and pairs["filePath"] == "/srv/inbox/scan.txt"
    assert pairs["fileHash"] == "ab" * 32 and pairs["fsize"] == "123"
    assert pairs["act"] == "quarantine,alert" and pairs["externalId"] == "alert-1"
    assert pairs["cs2"] == "CARD:1,EMAIL:1" and pairs["cn1"] == "42"
    assert pairs["flexString1"] == "card@regex/1,email@pii/2.1"
    for key, label, _ in CUSTOM_STRINGS:
        assert pairs[f"{key}Label"] == label


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_name_stays_inside_its_cef_fields_and_injects_no_key(name: str):
    line = render("cef", payload(name))
    assert "\n" not in line and "\r" not in line
    header, pairs = parse_cef(line)
    assert len(header) == 6 and header[3] == "finding" and header[5] == "8"
    assert pairs["fname"] == expected_in_cef(name)
    assert pairs["filePath"] == "/srv/inbox/" + expected_in_cef(name)
    assert pairs["act"] == "quarantine,alert"
    assert set(pairs) == set(parse_cef(render("cef", payload("plain.txt")))[1])


def test_a_hostile_reason_cannot_add_a_cef_header_field():
    p = payload("a.txt", findings=())
    p["event"]["reason"] = "bad|header\\|8|\nx=y"
    header, pairs = parse_cef(render("cef", p))
    assert len(header) == 6 and header[4] == "dropwarden finding: bad|header\\|8|\ufffdx=y"
    assert pairs["cs6"] == "bad|header\\|8|\nx=y"


# ------------------------------------------------------------------------ OCSF


@pytest.mark.parametrize("name", ["scan.txt", *HOSTILE_NAMES])
def test_ocsf_is_a_detection_finding_the_ocsf_model_accepts(name: str):
    text = render("ocsf", payload(name))
    assert text.isascii() and "\n" not in text
    document = json.loads(text)
    finding = DetectionFinding.model_validate(document)
    assert finding.class_uid == 2004 and finding.type_uid == 200401 and finding.severity_id == 4
    assert finding.finding_info.uid == "alert-1" and finding.finding_info.types == ["CARD", "EMAIL"]
    assert finding.finding_info.analytic is not None and finding.finding_info.analytic.uid == "card"
    assert finding.finding_info.analytic.version == "1"
    assert [(a.uid, a.version) for a in finding.finding_info.related_analytics or []] == [("email", "2.1")]
    assert document["disposition_id"] == 3 and document["evidences"][0]["file"]["name"] == name
    assert document["evidences"][0]["file"]["hashes"][0]["value"] == "ab" * 32


def test_an_unscanned_alert_and_an_audit_head_event_are_valid_findings_too():
    unscanned = payload("a.txt", findings=())
    assert DetectionFinding.model_validate(json.loads(render("ocsf", unscanned))).severity_id == 3
    from dropwarden.act.alerts import audit_head_payload

    head = audit_head_payload({"log_id": "l", "seq": 3, "hash": "h" * 64})
    document = json.loads(render("ocsf", head))
    assert DetectionFinding.model_validate(document).severity_id == 1
    assert parse_cef(render("cef", head))[0][3] == "audit.head"


# ------------------------------------------------------------------------ never a value


def test_every_finding_in_the_payload_names_its_detector_and_version_and_no_value():
    findings = payload()["dropwarden"]["findings"]
    assert [(f["rule"], f["detector"], f["detector_version"]) for f in findings] == [
        ("card", "regex", "1"),
        ("email", "pii", "2.1"),
    ]
    assert all(set(f) == set(findings[0]) and "excerpt" not in f for f in findings)


@pytest.mark.parametrize("format_name", ["ecs", "cef", "ocsf"])
def test_no_format_carries_a_finding_value_or_excerpt(format_name: str):
    assert SECRET not in render(format_name, payload())
