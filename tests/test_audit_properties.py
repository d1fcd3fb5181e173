"""Audit log properties: what is appended reads back equal and verifies; any single changed byte fails.

Why no single-byte change can be benign (each case is what the mutation tests below check, on every
byte of a log that holds escapes, multi-byte UTF-8, numbers, nesting, checkpoints and a reopen):

* A byte inside a line. `parse_line` accepts a line only when it is exactly the canonical encoding
  of the record it parses to (`canonical(record) == line`). Canonical encoding is a function of the
  record, so a different line that still parses is a *different record*: JSON whitespace, `\\u00e9`
  for `é`, `1.0e0` for `1.0`, upper-case hex in an escape, a reordered key — none of them are
  canonical, so none can stand in for the original bytes (nor can a number pushed past a float's
  range, 1e+400, which reads as infinity and has no canonical form). The different record then
  differs either in its `hash` field (and its hash no longer matches its unchanged content) or in
  its content (and its content no longer matches its unchanged `hash`, short of a SHA-256 second
  preimage).
* A newline replaced by another byte joins two records into one line, which is not one JSON value
  ("Extra data"); the last newline replaced leaves a torn last line, which `verify` reports.
* A byte replaced by a newline splits a record: the first part is a proper prefix of one JSON
  object (whose closing brace is the line's last byte), never a complete value.

So `audit verify` rejects every single-byte change, at the line that holds the byte. By default each
byte gets three kinds of change; every other value of every byte (about a million runs of `verify`):

    DROPWARDEN_MUTATION_EXHAUSTIVE=1 .venv/bin/pytest -q tests/test_audit_properties.py --timeout=0
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropwarden.audit import AuditLog, AuditRecord, verify
from dropwarden.audit.chain import RESERVED_TYPES
from dropwarden.audit.store import anchor_path, k0_path, read_key_file
from dropwarden.cli import build_cli
from dropwarden.config import AuditSettings

EXAMPLES = int(os.environ.get("DROPWARDEN_FUZZ_EXAMPLES", "0")) or None
# Every replacement byte at every position (255 per byte: minutes) instead of a few kinds of change.
EXHAUSTIVE = os.environ.get("DROPWARDEN_MUTATION_EXHAUSTIVE", "") not in ("", "0")

CLI = build_cli()


def cli_verify(path: Path, state_dir: Path) -> Any:
    """The real `dropwarden audit verify`, with K_0 and the anchor passed as an operator would."""
    return CliRunner().invoke(
        CLI,
        [
            "audit",
            "verify",
            str(path),
            "--key",
            str(k0_path(state_dir)),
            "--anchor",
            str(anchor_path(state_dir)),
        ],
    )


def audit_settings(path: Path, **overrides: Any) -> AuditSettings:
    return AuditSettings(path=path, **{"checkpoint_every": 4, "fsync": "never", **overrides})


# ------------------------------------------------------------------------------------------ round trip

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)
BODIES = st.dictionaries(TEXT, JSON_VALUES, max_size=4)
TYPES = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12).filter(
    lambda kind: kind not in RESERVED_TYPES
)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), TYPES, BODIES),
        st.tuples(st.just("many"), st.lists(st.tuples(TYPES, BODIES), min_size=1, max_size=4)),
        st.tuples(st.just("checkpoint")),
        st.tuples(st.just("reopen")),
    ),
    max_size=12,
)


@settings(
    max_examples=EXAMPLES or 60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    operations=OPERATIONS,
    every=st.integers(1, 6),
    fsync=st.sampled_from(["always", "batch", "never"]),
)
def test_appended_records_read_back_equal_and_verify(
    tmp_path_factory: pytest.TempPathFactory, operations: list[tuple[Any, ...]], every: int, fsync: str
) -> None:
    """Any sequence of appends, batches, manual checkpoints and reopenings, with any checkpoint
    spacing and fsync mode: the file holds exactly the records the writer returned, the caller's
    records in order with equal bodies, and both `verify` and `dropwarden audit verify` accept it."""
    base = tmp_path_factory.mktemp("roundtrip")
    path, state = base / "audit.jsonl", base / "state"
    options = audit_settings(path, checkpoint_every=every, fsync=fsync)
    expected: list[tuple[str, Any]] = []
    returned: list[AuditRecord] = []
    log = AuditLog.open(path, state, options, background=False)
    try:
        for op in operations:
            if op[0] == "append":
                returned.append(log.append(op[1], op[2]))
                expected.append((op[1], op[2]))
            elif op[0] == "many":
                returned.extend(log.append_many(op[1]))
                expected.extend(op[1])
            elif op[0] == "checkpoint":
                log.checkpoint()
            else:
                log.close()
                log = AuditLog.open(path, state, options, background=False)
    finally:
        log.close()

    on_disk = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["seq"] for r in on_disk] == list(range(len(on_disk)))
    by_seq = {r["seq"]: r for r in on_disk}
    for record in returned:
        assert by_seq[record.seq] == {
            "seq": record.seq,
            "time": record.time,
            "type": record.type,
            "body": record.body,
            "prev": record.prev,
            "hash": record.hash,
        }
    assert [(r["type"], r["body"]) for r in on_disk if r["type"] not in RESERVED_TYPES] == expected

    result = verify(path, read_key_file(k0_path(state)), json.loads(anchor_path(state).read_text()))
    assert result.ok and result.macs_verified and result.anchor_checked, result.message
    assert result.records == len(on_disk)
    out = cli_verify(path, state)
    assert out.exit_code == 0, out.output
    assert f"OK: {len(on_disk)} records" in out.stdout and "MACs verified" in out.stdout


# ------------------------------------------------------------------------------------------ mutation

BODY_KINDS: list[dict[str, Any]] = [
    {"path": "/srv/drop/inbox/a.txt", "verdict": "clean", "ms": 1.25},
    {"escapes": 'line\nbreak "quoted" back\\slash \x00\x01\x1f\x7f tab\t', "empty": ""},
    {"utf8": "東京都 é 😀 ｶﾀｶﾅ \u202e", "nested": {"a": [1, -2, 3.5e-7, 1e100, True, False, None, []]}},
    {"numbers": [0, -0.0, 2**63, -(2**70), 0.1, 123456789.125], "object": {}},
    {"findings": [{"type": "CREDIT_CARD", "excerpt": "ref [******1111] ##", "location": {"line": 1}}]},
]


@pytest.fixture(scope="module")
def closed_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, bytes]]:
    """A closed log, written by the real AuditLog (with a reopen), that `audit verify` accepts."""
    base = tmp_path_factory.mktemp("mutation")
    path, state = base / "audit.jsonl", base / "state"
    with AuditLog.open(path, state, audit_settings(path), background=False) as log:
        for index, body in enumerate(BODY_KINDS):
            log.append("decision" if index % 2 else "action.done", body)
    with AuditLog.open(path, state, audit_settings(path), background=False) as log:  # log.resume
        log.append("daemon.stop", {"judged": 5})
    original = path.read_bytes()
    assert cli_verify(path, state).exit_code == 0
    yield path, state, original
    assert path.read_bytes() == original  # every change was put back


def line_of(data: bytes, position: int) -> int:
    """The 1-based line that holds the byte at `position` (a newline belongs to the line it ends)."""
    return data.count(b"\n", 0, position) + 1


def expect_rejected(
    path: Path, state: Path, original: bytes, position: int, value: int, use_cli: bool
) -> None:
    """Change the byte at `position` to `value` in place, check that verification names its line as
    damaged, and put the byte back."""
    line = line_of(original, position)
    what = f"byte {position} (line {line}) {original[position]:#04x} -> {value:#04x}"
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes([value]), position)
        if use_cli:
            out = cli_verify(path, state)
            assert out.exit_code == 1, f"{what}: {out.output}"
            assert f"DAMAGED at line {line} " in out.stdout, f"{what}: {out.stdout}"
        else:
            result = verify(path, read_key_file(k0_path(state)), json.loads(anchor_path(state).read_text()))
            assert not result.ok, what
            assert result.first_bad_line == line, f"{what}: {result.message}"
    finally:
        os.pwrite(fd, original[position : position + 1], position)
        os.close(fd)


# The kinds of change that could hope to be benign, besides the neighbouring value (byte ^ 1: a digit,
# hex digit or letter next to it): the other case (hex digits, `true`), a line break, whitespace,
# quote and escape characters, the high bit (a UTF-8 lead or continuation byte).
KINDS = (
    lambda byte: byte ^ 0x20,
    lambda byte: ord("\n"),
    lambda byte: ord(" "),
    lambda byte: ord("\t"),
    lambda byte: ord('"'),
    lambda byte: ord("\\"),
    lambda byte: byte ^ 0x80,
)


def change(position: int, byte: int, turn: int) -> int:
    """One of KINDS, taken in turn by position (so each kind meets every line and every field), or
    the neighbouring value where that kind would leave the byte as it is."""
    value = KINDS[(position + turn) % len(KINDS)](byte)
    return value if value != byte else byte ^ 0x01


def test_every_single_byte_change_anywhere_fails_verify(closed_log: tuple[Path, Path, bytes]) -> None:
    """Every position of the file (newlines included), changed to its neighbouring value and to one
    other kind of change (every other byte value with DROPWARDEN_MUTATION_EXHAUSTIVE): `verify`
    with K_0 and the anchor rejects each, naming the line that holds the byte."""
    path, state, original = closed_log
    for position, byte in enumerate(original):
        values = (
            [v for v in range(256) if v != byte] if EXHAUSTIVE else {byte ^ 0x01, change(position, byte, 0)}
        )
        for value in values:
            expect_rejected(path, state, original, position, value, use_cli=False)


def test_every_position_changed_fails_the_audit_verify_command(closed_log: tuple[Path, Path, bytes]) -> None:
    """The same through the command an operator runs: every byte, changed by a third kind."""
    path, state, original = closed_log
    for position, byte in enumerate(original):
        expect_rejected(path, state, original, position, change(position, byte, 3), use_cli=True)


def test_a_number_changed_past_a_floats_range_fails_verify(closed_log: tuple[Path, Path, bytes]) -> None:
    """Regression (found by the exhaustive run): 1e+100 changed to 1e+400 reads as infinity, which
    the canonical check then could not encode: `audit verify` died with a ValueError traceback."""
    path, state, original = closed_log
    position = original.index(b"1e+100") + 3
    expect_rejected(path, state, original, position, ord("4"), use_cli=False)
    expect_rejected(path, state, original, position, ord("4"), use_cli=True)


@settings(max_examples=EXAMPLES or 300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_byte_at_any_position_fails_the_audit_verify_command(
    closed_log: tuple[Path, Path, bytes], data: st.DataObject
) -> None:
    """Random positions and any replacement value, through `dropwarden audit verify`."""
    path, state, original = closed_log
    position = data.draw(st.integers(0, len(original) - 1), label="position")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != original[position]), label="value")
    expect_rejected(path, state, original, position, value, use_cli=True)
