"""The audit log: format, chain and checkpoint checks, each kind of damage, repair, locking, key evolution."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from dropwarden.audit import AuditError, AuditLocked, AuditLog, verify
from dropwarden.audit.chain import GENESIS_PREV, canonical, checkpoint_mac, evolve, key_id, record_hash
from dropwarden.audit.store import anchor_path, current_key_path, k0_path, read_key_file
from dropwarden.cli import build_cli
from dropwarden.config import AuditSettings

# With every=5 and 12 appends the log is (seq: line - 1):
#   0 log.open, 1 checkpoint(open, epoch 0), 2-6 records, 7 checkpoint(count, 1), 8-12 records,
#   13 checkpoint(count, 2), 14-15 records, 16 checkpoint(close, 3).
APPENDS = 12
LINES = 17
CHECKPOINT_SEQS = (1, 7, 13, 16)


def audit_settings(path: Path, **overrides: Any) -> AuditSettings:
    return AuditSettings(path=path, **{"checkpoint_every": 5, "fsync": "never", **overrides})


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"  # where conftest's write_config points the configuration


def write_log(log_path: Path, state_dir: Path, appends: int = APPENDS, **overrides: Any) -> None:
    with AuditLog.open(log_path, state_dir, audit_settings(log_path, **overrides), background=False) as log:
        for index in range(appends):
            log.append("file.judged", {"index": index, "verdict": "clean", "path": f"/drop/in/{index}.txt"})


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(path)]


def write_records(path: Path, recs: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(canonical(r) + b"\n" for r in recs))


def reseal(recs: list[dict[str, Any]], start: int, forge_key: bytes | None = None) -> None:
    """What an attacker without K_0 can do: renumber and rehash from `start`, and re-MAC checkpoints
    under a key of their own when `forge_key` is given."""
    head = recs[start - 1]["hash"] if start else GENESIS_PREV
    key = forge_key
    for index in range(start, len(recs)):
        rec = recs[index]
        rec["seq"], rec["prev"] = index, head
        if rec["type"] == "checkpoint" and key is not None:
            rec["body"]["mac"] = checkpoint_mac(key, rec)
            key = evolve(key)
        rec["hash"] = record_hash(rec)
        head = rec["hash"]


def k0(state_dir: Path) -> bytes:
    return read_key_file(k0_path(state_dir))


def anchor(state_dir: Path) -> dict[str, Any]:
    return json.loads(anchor_path(state_dir).read_text())


def cli_verify(*args: str) -> Any:
    return CliRunner().invoke(build_cli(), ["audit", "verify", *args])


def assert_cli_damaged(result: Any, line: int, seq: int, words: str) -> None:
    assert result.exit_code == 1, result.output
    assert f"line {line} (seq {seq})" in result.stdout
    assert re.search(words, result.stdout), result.stdout


# ------------------------------------------------------------------------------------------ format


def test_records_are_canonical_chained_lines(log_path: Path, state_dir: Path) -> None:
    write_log(log_path, state_dir)
    raw, recs = lines(log_path), records(log_path)
    assert len(recs) == LINES
    head = GENESIS_PREV
    for seq, (line, rec) in enumerate(zip(raw, recs, strict=True)):
        assert line == canonical(rec) + b"\n"
        assert set(rec) == {"seq", "time", "type", "body", "prev", "hash"}
        assert rec["seq"] == seq and rec["prev"] == head and rec["hash"] == record_hash(rec)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", rec["time"])
        head = rec["hash"]
    genesis = recs[0]
    assert genesis["type"] == "log.open"
    assert set(genesis["body"]) == {"format", "log_id", "key_id"}
    assert re.fullmatch(r"[0-9a-f]{32}", genesis["body"]["log_id"])
    cps = [r for r in recs if r["type"] == "checkpoint"]
    assert [c["seq"] for c in cps] == list(CHECKPOINT_SEQS)
    assert [c["body"]["epoch"] for c in cps] == [0, 1, 2, 3]
    assert [c["body"]["reason"] for c in cps] == ["open", "count", "count", "close"]


def test_the_log_adds_nothing_secret(log_path: Path, state_dir: Path) -> None:
    write_log(log_path, state_dir)
    text = log_path.read_text()
    key = k0(state_dir)
    for _ in range(6):
        assert key.hex() not in text
        key = evolve(key)
    assert records(log_path)[0]["body"]["key_id"] == key_id(k0(state_dir))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None)
@given(bodies=st.lists(st.dictionaries(st.text(), json_values, max_size=5), min_size=1, max_size=6))
def test_any_json_body_round_trips_and_verifies(tmp_path_factory: Any, bodies: list[dict[str, Any]]) -> None:
    base = tmp_path_factory.mktemp("prop")
    path = base / "audit.jsonl"
    with AuditLog.open(
        path, base / "state", audit_settings(path, checkpoint_every=3), background=False
    ) as log:
        written = log.append_many([("t", body) for body in bodies])
    assert [r.body for r in written] == bodies
    by_seq = {r["seq"]: r for r in records(path)}
    assert [by_seq[r.seq]["body"] for r in written] == bodies
    assert verify(path, k0(base / "state"), anchor(base / "state")).ok


def test_reserved_types_and_non_json_bodies_are_refused(log_path: Path, state_dir: Path) -> None:
    with AuditLog.open(log_path, state_dir, audit_settings(log_path), background=False) as log:
        before = log_path.read_bytes()
        for kind in ("checkpoint", "log.open", "audit.repair", ""):
            with pytest.raises(ValueError):
                log.append(kind, {})
        with pytest.raises(ValueError):
            log.append("x", {"score": float("nan")})
        with pytest.raises(ValueError):
            log.append("x", {"name": "\ud800"})
        with pytest.raises(TypeError):
            log.append_many([("x", {"ok": 1}), ("x", {"raw": b"bytes"})])
        assert log_path.read_bytes() == before


# ------------------------------------------------------------------------------------------ intact logs


def test_intact_log_verifies_with_key_and_anchor(log_path: Path, state_dir: Path, write_config: Any) -> None:
    write_log(log_path, state_dir)
    result = verify(log_path, k0(state_dir), anchor(state_dir))
    assert result.ok and result.macs_verified and result.anchor_checked
    assert (result.records, result.checkpoints, result.last_seq) == (LINES, 4, LINES - 1)
    out = cli_verify(str(log_path), "--config", str(write_config()))
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == (
        f"{log_path}: OK: {LINES} records, last seq {LINES - 1}, 4 checkpoints, MACs verified, anchor matched"
    )


def test_without_k0_the_cli_says_macs_were_not_verified(
    log_path: Path, state_dir: Path, write_config: Any, tmp_path: Path
) -> None:
    write_log(log_path, state_dir)
    k0_path(state_dir).rename(tmp_path / "offhost.key")  # the operator copied it off-host
    out = cli_verify(str(log_path), "--config", str(write_config()))
    assert out.exit_code == 0, out.output
    assert "MACs NOT verified" in out.stdout and "no K_0 at" in out.output
    out = cli_verify(str(log_path), "--config", str(write_config()), "--key", str(tmp_path / "offhost.key"))
    assert out.exit_code == 0 and "MACs verified" in out.stdout


def test_reopening_continues_the_chain_and_the_key(log_path: Path, state_dir: Path) -> None:
    write_log(log_path, state_dir)
    write_log(log_path, state_dir, appends=3)
    recs = records(log_path)
    resume = recs[LINES]
    assert resume["type"] == "log.resume" and resume["body"] == {"previous_close": "clean"}
    assert [r["body"]["epoch"] for r in recs if r["type"] == "checkpoint"] == [0, 1, 2, 3, 4, 5]
    assert verify(log_path, k0(state_dir), anchor(state_dir)).ok


def test_a_new_log_remembers_the_previous_one(log_path: Path, state_dir: Path) -> None:
    write_log(log_path, state_dir)
    old = anchor(state_dir)
    log_path.rename(log_path.with_suffix(".1"))
    write_log(log_path, state_dir, appends=1)
    genesis = records(log_path)[0]["body"]
    assert genesis["previous"] == {k: old[k] for k in ("log_id", "seq", "hash")}
    assert genesis["log_id"] != old["log_id"]
    assert verify(log_path.with_suffix(".1"), k0(state_dir)).ok


# ------------------------------------------------------------------------------------------ damage


@pytest.fixture
def written(log_path: Path, state_dir: Path, write_config: Any) -> Path:
    write_log(log_path, state_dir)
    return write_config()


def test_flipped_byte_in_a_body(log_path: Path, state_dir: Path, written: Path) -> None:
    raw = lines(log_path)
    raw[3] = raw[3].replace(b'"verdict":"clean"', b'"verdict":"clEan"')
    log_path.write_bytes(b"".join(raw))
    for key in (None, k0(state_dir)):
        result = verify(log_path, key)
        assert not result.ok
        assert (result.first_bad_line, result.first_bad_seq) == (4, 3)
        assert "hash does not match" in result.message
    assert_cli_damaged(cli_verify(str(log_path), "--config", str(written)), 4, 3, "hash does not match")


@pytest.mark.parametrize("field", ["hash", "prev"])
def test_flipped_byte_in_a_hash(log_path: Path, state_dir: Path, written: Path, field: str) -> None:
    raw = lines(log_path)
    value = json.loads(raw[9])[field]
    flipped = value[:10] + ("0" if value[10] != "0" else "1") + value[11:]
    raw[9] = raw[9].replace(value.encode(), flipped.encode())
    log_path.write_bytes(b"".join(raw))
    result = verify(log_path)
    assert (result.ok, result.first_bad_line, result.first_bad_seq) == (False, 10, 9)
    assert_cli_damaged(cli_verify(str(log_path), "--config", str(written)), 10, 9, "hash does not match")


def test_non_canonical_rewrite_of_a_line(log_path: Path, written: Path) -> None:
    raw = lines(log_path)
    raw[5] = json.dumps(json.loads(raw[5]), sort_keys=True).encode() + b"\n"  # same values, spaces added
    log_path.write_bytes(b"".join(raw))
    result = verify(log_path)
    assert (result.ok, result.first_bad_line) == (False, 6) and "canonical" in result.message


def test_deleted_record(log_path: Path, written: Path) -> None:
    raw = lines(log_path)
    del raw[4]  # seq 4
    log_path.write_bytes(b"".join(raw))
    result = verify(log_path)
    assert (result.ok, result.first_bad_line, result.first_bad_seq) == (False, 5, 5)
    assert "seq 5 where 4 was expected" in result.message
    assert_cli_damaged(
        cli_verify(str(log_path), "--config", str(written)), 5, 5, "deleted, inserted or reordered"
    )


def test_swapped_records(log_path: Path, written: Path) -> None:
    raw = lines(log_path)
    raw[9], raw[10] = raw[10], raw[9]
    log_path.write_bytes(b"".join(raw))
    result = verify(log_path)
    assert (result.ok, result.first_bad_line, result.first_bad_seq) == (False, 10, 10)
    assert_cli_damaged(cli_verify(str(log_path), "--config", str(written)), 10, 10, "reordered")


def test_inserted_record_is_caught_by_the_chain_without_any_key(log_path: Path, written: Path) -> None:
    """A forged record that is itself well formed (right seq, prev and hash) but whose successors were left
    alone: the next original record no longer chains; no key is needed."""
    recs = records(log_path)
    forged = {"seq": 4, "time": recs[4]["time"], "type": "file.judged", "body": {"verdict": "clean"}}
    forged["prev"] = recs[3]["hash"]
    forged["hash"] = record_hash(forged)
    write_records(log_path, [*recs[:4], forged, *recs[4:]])
    result = verify(log_path)
    assert (result.ok, result.first_bad_line, result.first_bad_seq) == (False, 6, 4)
    assert_cli_damaged(
        cli_verify(str(log_path), "--config", str(written)), 6, 4, "seq 4 where 5 was expected"
    )


def test_inserted_record_with_recomputed_chain(log_path: Path, state_dir: Path, written: Path) -> None:
    """Renumbered and rehashed after the insertion: the chain alone cannot tell; the next checkpoint's MAC
    under K_0 does (its seq and prev changed), and so does the anchor (the anchored record moved)."""
    recs = records(log_path)
    forged = {
        "seq": 0,
        "time": recs[4]["time"],
        "type": "file.judged",
        "body": {"verdict": "clean"},
        "hash": "",
    }
    recs.insert(5, forged)
    reseal(recs, 5)
    write_records(log_path, recs)

    assert verify(log_path).ok  # the limit of a bare hash chain, stated plainly
    with_key = verify(log_path, k0(state_dir))
    assert (with_key.ok, with_key.first_bad_line, with_key.first_bad_seq) == (False, 9, 8)
    assert "MAC does not verify" in with_key.message
    with_anchor = verify(log_path, None, anchor(state_dir))
    assert (with_anchor.ok, with_anchor.first_bad_seq) == (False, 16)
    assert "differs from the one the anchor names" in with_anchor.message
    assert_cli_damaged(cli_verify(str(log_path), "--config", str(written)), 9, 8, "MAC does not verify")


def test_tail_truncated_past_a_checkpoint_is_caught_by_the_anchor(
    log_path: Path, state_dir: Path, written: Path, tmp_path: Path
) -> None:
    raw = lines(log_path)
    log_path.write_bytes(b"".join(raw[:12]))  # ends at seq 11, after checkpoint seq 7
    assert verify(log_path, k0(state_dir)).ok  # what is left is a valid log: only the anchor knows better
    result = verify(log_path, k0(state_dir), anchor(state_dir))
    assert (result.ok, result.first_bad_line, result.first_bad_seq) == (False, 13, 12)
    assert "tail was truncated (5 records cut off)" in result.message
    assert_cli_damaged(cli_verify(str(log_path), "--config", str(written)), 13, 12, "tail was truncated")
    # --anchor overrides discovery (a copy kept off-host).
    copy = tmp_path / "anchor-copy.json"
    copy.write_bytes(anchor_path(state_dir).read_bytes())
    anchor_path(state_dir).unlink()
    assert cli_verify(str(log_path), "--config", str(written)).exit_code == 0
    assert_cli_damaged(
        cli_verify(str(log_path), "--anchor", str(copy), "--config", str(written)), 13, 12, "truncated"
    )


def test_rewritten_log_is_caught_by_the_checkpoint_mac(
    log_path: Path, state_dir: Path, written: Path
) -> None:
    """Everything after the genesis rewritten, hashes recomputed, checkpoints re-MACed under a key of the
    attacker's: chain and epochs are consistent, only K_0 exposes it."""
    recs = records(log_path)
    recs[3]["body"]["verdict"] = "quarantine"
    reseal(recs, 3, forge_key=os.urandom(32))
    write_records(log_path, recs)
    assert verify(log_path).ok
    result = verify(log_path, k0(state_dir))
    assert (result.ok, result.first_bad_line, result.first_bad_seq) == (False, 8, 7)  # first checkpoint after
    assert "MAC does not verify" in result.message
    assert_cli_damaged(
        cli_verify(str(log_path), "--key", str(k0_path(state_dir)), "--config", str(written)),
        8,
        7,
        "MAC does not verify",
    )
    # Also replacing the key id with the attacker's own is caught at the first line.
    recs[0]["body"]["key_id"] = key_id(b"attacker key 32 bytes long......")
    reseal(recs, 0, forge_key=b"attacker key 32 bytes long......")
    write_records(log_path, recs)
    result = verify(log_path, k0(state_dir))
    assert (result.ok, result.first_bad_line) == (False, 1) and "not this log's key" in result.message
    assert_cli_damaged(cli_verify(str(log_path), "--config", str(written)), 1, 0, "not this log's key")


def test_removed_checkpoint_is_caught_by_its_epoch_without_a_key(log_path: Path, written: Path) -> None:
    recs = records(log_path)
    del recs[7]
    reseal(recs, 7)
    write_records(log_path, recs)
    result = verify(log_path)
    assert (result.ok, result.first_bad_line) == (False, 13) and "epoch 2 where 1" in result.message


def test_cli_usage_errors_exit_2(log_path: Path, tmp_path: Path, written: Path) -> None:
    assert cli_verify(str(tmp_path / "missing.jsonl")).exit_code == 2
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("not hex\n")
    assert cli_verify(str(log_path), "--key", str(bad_key), "--config", str(written)).exit_code == 2
    assert cli_verify(str(log_path), "--anchor", str(bad_key), "--config", str(written)).exit_code == 2


# ------------------------------------------------------------------------------------------ open


def test_torn_tail_is_set_aside_recorded_and_verifies(
    log_path: Path, state_dir: Path, written: Path, tmp_path: Path
) -> None:
    torn = b'{"body":{"index":99,"verdict":"cle'
    with log_path.open("ab") as handle:
        handle.write(torn)
    result = verify(log_path, k0(state_dir), anchor(state_dir))
    assert (result.ok, result.first_bad_line) == (False, LINES + 1) and "torn last line" in result.message
    assert cli_verify(str(log_path), "--config", str(written)).exit_code == 1

    write_log(log_path, state_dir, appends=1)
    aside = list(tmp_path.glob("audit.jsonl.torn-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == torn
    recs = records(log_path)
    assert recs[LINES]["body"] == {"previous_close": "unclean"}
    repair = recs[LINES + 1]
    assert repair["type"] == "audit.repair"
    assert repair["body"]["bytes"] == len(torn)
    assert repair["body"]["sha256"] == hashlib.sha256(torn).hexdigest()
    assert repair["body"]["set_aside"] == str(aside[0])
    assert verify(log_path, k0(state_dir), anchor(state_dir)).ok
    assert cli_verify(str(log_path), "--config", str(written)).exit_code == 0


def crash_after(log_path: Path, state_dir: Path, appends: int) -> None:
    """A writer process that appends and dies without closing (no final checkpoint)."""
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from dropwarden.audit import AuditLog\n"
        "from dropwarden.config import AuditSettings\n"
        "p = Path(sys.argv[1])\n"
        "s = AuditSettings(path=p, checkpoint_every=4, fsync='batch')\n"
        "log = AuditLog.open(p, Path(sys.argv[2]), s)\n"
        "for i in range(int(sys.argv[3])):\n"
        "    log.append('file.judged', {'index': i, 'verdict': 'clean'})\n"
        "log.sync()\n"
        "os._exit(0)\n"
    )
    argv = [sys.executable, "-c", script, str(log_path), str(state_dir), str(appends)]
    subprocess.run(argv, check=True, timeout=60)


def test_crash_without_close_reopens_cleanly(log_path: Path, state_dir: Path) -> None:
    crash_after(log_path, state_dir, 10)
    write_log(log_path, state_dir, appends=1)
    recs = records(log_path)
    resume = next(r for r in recs if r["type"] == "log.resume")
    assert resume["body"] == {"previous_close": "unclean"}
    assert verify(log_path, k0(state_dir), anchor(state_dir)).ok


def _damage_after_last_checkpoint(log_path: Path) -> None:
    raw = lines(log_path)
    raw[-2] = raw[-2].replace(b'"verdict":"clean"', b'"verdict":"dirty"')
    log_path.write_bytes(b"".join(raw))


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (_damage_after_last_checkpoint, "hash does not match"),
        (lambda p: p.write_bytes(p.read_bytes() + b"garbage\n"), "not a valid JSON record"),
        (lambda p: p.write_bytes(b"".join(lines(p)[:-3])), "truncated"),
    ],
    ids=["altered", "garbage-line", "truncated-past-anchor"],
)
def test_other_damage_is_an_error_on_open(log_path: Path, state_dir: Path, damage: Any, words: str) -> None:
    write_log(log_path, state_dir)
    crash_after(log_path, state_dir, 2)  # ends: log.resume, checkpoint (anchored), record, record
    damage(log_path)
    before = log_path.read_bytes()
    with pytest.raises(AuditError, match=words):
        AuditLog.open(log_path, state_dir, audit_settings(log_path), background=False)
    assert log_path.read_bytes() == before  # nothing repaired


def test_damage_before_the_anchor_is_found_on_open_when_the_anchor_is_gone(
    log_path: Path, state_dir: Path
) -> None:
    write_log(log_path, state_dir)
    raw = lines(log_path)
    raw[3] = raw[3].replace(b'"verdict":"clean"', b'"verdict":"dirty"')
    log_path.write_bytes(b"".join(raw))
    anchor_path(state_dir).unlink()
    with pytest.raises(AuditError, match=r"line 4 \(seq 3\)"):
        AuditLog.open(log_path, state_dir, audit_settings(log_path), background=False)


def test_second_writer_is_refused(log_path: Path, state_dir: Path) -> None:
    first = AuditLog.open(log_path, state_dir, audit_settings(log_path))
    try:
        with pytest.raises(AuditLocked, match="locked by another writer"):
            AuditLog.open(log_path, state_dir, audit_settings(log_path))
        script = (
            "import sys\nfrom pathlib import Path\nfrom dropwarden.audit import AuditLog, AuditError\n"
            "from dropwarden.config import AuditSettings\np = Path(sys.argv[1])\n"
            "try:\n    AuditLog.open(p, Path(sys.argv[2]), AuditSettings(path=p))\n"
            "except AuditError as e:\n    print(e); sys.exit(3)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", script, str(log_path), str(state_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 3 and "locked by another writer" in proc.stdout
        first.append("file.judged", {"verdict": "clean"})
    finally:
        first.close()
    AuditLog.open(log_path, state_dir, audit_settings(log_path)).close()
    assert verify(log_path, k0(state_dir), anchor(state_dir)).ok


# ------------------------------------------------------------------------------------------ keys


def test_key_evolves_and_old_keys_are_gone(log_path: Path, state_dir: Path, tmp_path: Path) -> None:
    with AuditLog.open(log_path, state_dir, audit_settings(log_path), background=False) as log:
        keep = tmp_path / "old-key-inode"
        os.link(current_key_path(state_dir), keep)  # a handle on the file the next checkpoint replaces
        for index in range(APPENDS):
            log.append("file.judged", {"index": index})
    first = k0(state_dir)
    chain = [first]
    for _ in range(4):
        chain.append(evolve(chain[-1]))
    state = json.loads(current_key_path(state_dir).read_text())
    assert state["epoch"] == 4 and bytes.fromhex(state["key"]) == chain[4] != first
    assert current_key_path(state_dir).stat().st_mode & 0o777 == 0o600
    # No earlier key K_1..K_3 is left in any file under the state dir or beside the log; K_0 only in its file.
    for path in [*state_dir.rglob("*"), *tmp_path.glob("audit.jsonl*")]:
        if path.is_file():
            data = path.read_bytes()
            for old in chain[1:4]:
                assert old.hex().encode() not in data, path
            if path != k0_path(state_dir):
                assert first.hex().encode() not in data, path
    assert keep.read_bytes().strip(b"\0") == b""  # the replaced file's bytes were overwritten
    assert not list(state_dir.rglob("*.tmp"))


def test_lost_key_state_is_rebuilt_from_k0_and_refused_without_it(log_path: Path, state_dir: Path) -> None:
    write_log(log_path, state_dir)
    current_key_path(state_dir).unlink()
    write_log(log_path, state_dir, appends=1)  # derived from K_0 at the right epoch
    assert verify(log_path, k0(state_dir), anchor(state_dir)).ok
    current_key_path(state_dir).unlink()
    k0_path(state_dir).unlink()
    with pytest.raises(AuditError, match="no checkpoint key"):
        AuditLog.open(log_path, state_dir, audit_settings(log_path), background=False)


# ------------------------------------------------------------------------------------------ fsync policy


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    return calls


@pytest.mark.parametrize(("mode", "low", "high"), [("always", 100, 110), ("never", 0, 0)])
def test_fsync_per_append_or_none(
    log_path: Path, state_dir: Path, fsyncs: list[int], mode: str, low: int, high: int
):
    with AuditLog.open(
        log_path, state_dir, audit_settings(log_path, fsync=mode, checkpoint_every=1000)
    ) as log:
        fsyncs.clear()
        for index in range(100):
            log.append("file.judged", {"index": index})
        assert low <= len(fsyncs) <= high
        fsyncs.clear()
        log.checkpoint()
        assert len(fsyncs) == 1  # checkpoints are durable in every mode


def test_batch_groups_fsyncs(log_path: Path, state_dir: Path, fsyncs: list[int]) -> None:
    with AuditLog.open(
        log_path, state_dir, audit_settings(log_path, fsync="batch", checkpoint_every=10**6)
    ) as log:
        fsyncs.clear()
        start = time.monotonic()
        for index in range(500):
            log.append("file.judged", {"index": index})
        elapsed = time.monotonic() - start
        assert len(fsyncs) <= elapsed / 0.02 + 2  # at most one per ~20 ms
        log.append_many([("file.judged", {"index": i}) for i in range(10)])
        log.sync()
        count = len(fsyncs)
        log.sync()  # nothing new: no fsync
        assert len(fsyncs) == count
        log.append("file.judged", {"last": True})
        deadline = time.monotonic() + 5
        while len(fsyncs) == count and time.monotonic() < deadline:  # the background thread flushes it
            time.sleep(0.01)
        assert len(fsyncs) == count + 1


def test_interval_checkpoint_from_the_background_thread(log_path: Path, state_dir: Path) -> None:
    settings_ = audit_settings(log_path, checkpoint_interval=0.05, fsync="batch")
    with AuditLog.open(log_path, state_dir, settings_) as log:
        log.append("file.judged", {"verdict": "clean"})
        deadline = time.monotonic() + 5
        opened = anchor(state_dir)["checkpoint"]["seq"]
        while anchor(state_dir)["checkpoint"]["seq"] == opened and time.monotonic() < deadline:
            time.sleep(0.02)
        seq = anchor(state_dir)["checkpoint"]["seq"]
        assert seq == opened + 2 and records(log_path)[seq]["body"]["reason"] == "interval"
    assert verify(log_path, k0(state_dir), anchor(state_dir)).ok


# ------------------------------------------------------------------------------------------ rotation


@pytest.fixture
def rotated(log_path: Path, state_dir: Path, write_config: Any) -> tuple[list[Path], Path]:
    """Three files as log rotation leaves them, oldest first, and the configuration."""
    files = [log_path.with_name("audit.jsonl-1"), log_path.with_name("audit.jsonl-2"), log_path]
    for name in files[:2]:
        write_log(log_path, state_dir, appends=3)
        log_path.rename(name)
    write_log(log_path, state_dir, appends=3)
    return files, write_config()


def test_rotated_files_verify_together_each_anchored_by_the_next(rotated: tuple[list[Path], Path]) -> None:
    files, config = rotated
    out = cli_verify(*map(str, files), "--config", str(config))
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == [
        f"{files[0]}: OK: 6 records, last seq 5, 2 checkpoints, MACs verified, continued by {files[1]}",
        f"{files[1]}: OK: 6 records, last seq 5, 2 checkpoints, MACs verified, continued by {files[2]}",
        f"{files[2]}: OK: 6 records, last seq 5, 2 checkpoints, MACs verified, anchor matched",
    ]


def test_a_rotated_file_left_out_shows(rotated: tuple[list[Path], Path]) -> None:
    files, config = rotated
    out = cli_verify(str(files[0]), str(files[2]), "--config", str(config))
    assert out.exit_code == 1
    assert f"{files[2]}: DAMAGED at line 1 (seq 0): it does not continue {files[0]}" in out.stdout


def test_a_rotated_file_truncated_past_its_last_checkpoint_shows(rotated: tuple[list[Path], Path]) -> None:
    files, config = rotated
    files[1].write_bytes(b"".join(lines(files[1])[:-1]))  # the closing checkpoint cut off
    out = cli_verify(*map(str, files), "--config", str(config))
    assert_cli_damaged(out, 6, 5, "tail was truncated")
    assert f"{files[1]}: DAMAGED" in out.stdout
    assert f"{files[0]}: OK" in out.stdout and f"{files[2]}: OK" in out.stdout
