"""A finished intent's path leaves the state database at once when the audit log masks it, by the next
tick when the audit log already shows it in clear (the per-file checkpoint that costs is saved there);
a checkpoint that waits does not hold up the other workers."""

from __future__ import annotations

import base64
import os
import sqlite3
import threading
from pathlib import Path

from dropwarden.act.records import shown_in_clear
from dropwarden.judge import turn as turn_module
from dropwarden.judge.names import JudgedName
from dropwarden.judge.turn import Turn
from dropwarden.state import State

from .test_daemon import CLEAN, Drop, write

SECRET_NAME = "card-4111111111111111.txt"


def _database_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


def _traces(full_path: Path, relpath: str) -> list[bytes]:
    """The name's bytes as an intent can hold them: raw, base64 of the relative path, and a run of the
    base64 of the whole path (the quarantine sidecar's `original_path_b64`)."""
    whole = base64.b64encode(os.fsencode(full_path))
    return [b"4111111111111111", base64.b64encode(relpath.encode()), whole[-40:-8]]


def test_a_moved_file_whose_name_matched_a_rule_leaves_no_trace_of_it_in_the_state_database(tmp_path):
    """With one worker, once the next file's decision is recorded, the first file (a card number in its
    name) has been moved and its intent finished: neither state.db nor its write-ahead log holds the name."""
    drop = Drop(tmp_path, extra="workers = 1\n")
    daemon = drop.daemon().start()
    try:
        first = write(drop.inbox / SECRET_NAME, CLEAN)
        daemon.wait_for(lambda: daemon.records("action.done"), what="the first file moved")
        write(drop.inbox / "status.txt", CLEAN)
        daemon.wait_for(lambda: daemon.decisions_for("status.txt"), what="the second decision")
        held = _database_bytes(drop.state / "state.db")
        for trace in _traces(first, SECRET_NAME):
            assert trace not in held, f"{trace!r} left in the state database"
    finally:
        daemon.stop()


def test_a_path_shown_in_clear_leaves_the_write_ahead_log_at_the_next_scrub(tmp_path):
    """finish_intent(path_in_audit_log=True) deletes the intent and leaves the log to `scrub_wal` (the
    daemon's tick), which then empties it."""
    path = tmp_path / "state" / "state.db"
    state = State(path)
    try:
        name = "quarterly-report-2026.txt"
        body = {"op": "release", "relpath_b64": base64.b64encode(name.encode()).decode()}
        state.add_intent("a" * 32, "release", body)
        state.finish_intent("a" * 32, "done", path_in_audit_log=True)
        assert state.pending_intents() == []
        assert state.scrub_wal()
        assert base64.b64encode(name.encode()) not in _database_bytes(path)
    finally:
        state.close()


def test_only_a_path_no_rule_matched_in_counts_as_shown_in_clear():
    """A name with a matched span, a name no rule could judge (hidden), no judged name, or one judged for
    another path: its intent is scrubbed from the log at once."""
    raw = b"sub/report.txt"
    assert shown_in_clear(JudgedName(raw), "sub/report.txt")
    assert not shown_in_clear(JudgedName(raw, ((4, 10),)), "sub/report.txt")
    assert not shown_in_clear(JudgedName(raw, hidden=True), "sub/report.txt")
    assert not shown_in_clear(None, "sub/report.txt")
    assert not shown_in_clear(JudgedName(raw), "sub/other.txt")


def test_a_checkpoint_held_up_by_a_reader_is_waited_for_without_the_workers_turn(tmp_path):
    """A worker that finishes an intent whose name matched a rule checkpoints the write-ahead log at
    once. A reader (a CLI) that keeps the log busy holds that checkpoint up to its busy timeout: the
    other workers must judge meanwhile, so the worker waits without its turn, and has it back after."""
    path = tmp_path / "state" / "state.db"
    state = State(path)
    reader = sqlite3.connect(path)
    try:
        body = {"op": "release", "relpath_b64": base64.b64encode(SECRET_NAME.encode()).decode()}
        state.add_intent("b" * 32, "release", body)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM intents").fetchone()  # a read snapshot: TRUNCATE must wait
        turn, other_judged = Turn(), threading.Event()

        def other_worker() -> None:
            with turn.held():
                other_judged.set()

        with turn.held():
            other = threading.Thread(target=other_worker, daemon=True)
            other.start()
            state.finish_intent("b" * 32, "done")  # path not in clear: checkpoint now
            judged_meanwhile = other_judged.is_set()
            held_after = getattr(turn_module._local, "turn", None) is turn
        other.join(5)
    finally:
        reader.close()
        state.close()
    assert judged_meanwhile and held_after
