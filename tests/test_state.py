"""The daemon's state database, on a real SQLite file: what it remembers, across a reopen.

Also covered in test_act_hardening.py: the schema 1 -> 2 migration, finished intents leaving no raw
name behind, the files' modes, and a full disk seen through the daemon.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropwarden.judge.intake import FileIdentity
from dropwarden.state import SCHEMA_VERSION, State, StateError

FILE = FileIdentity(dev=1, ino=2, size=3, mtime_ns=4, ctime_ns=5)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def state(path: Path) -> Iterator[State]:
    opened = State(path)
    yield opened
    opened.close()


def reopened(state: State) -> State:
    state.close()
    return State(state.path)


# ------------------------------------------------------------------------ the judged-file index


def test_a_judged_file_is_remembered_under_its_ruleset_across_a_restart(state: State):
    state.record_judged(FILE, "ab" * 32, "clean", "rules-1", "inbox")
    again = reopened(state)
    try:
        assert again.judged_verdict(FILE, "rules-1") == "clean"
        assert again.judged_verdict(FILE, "rules-2") is None  # new rules: judged again
        assert again.judged_count() == 1
    finally:
        again.close()


def test_any_change_to_a_files_identity_makes_it_another_file(state: State):
    state.record_judged(FILE, None, "finding", "rules", "inbox")
    for changed in (
        FileIdentity(9, 2, 3, 4, 5),
        FileIdentity(1, 9, 3, 4, 5),
        FileIdentity(1, 2, 9, 4, 5),
        FileIdentity(1, 2, 3, 9, 5),
        FileIdentity(1, 2, 3, 4, 9),  # a chmod, a rename, an operator's restore
    ):
        assert state.judged_verdict(changed, "rules") is None


def test_judging_the_same_file_version_again_replaces_its_verdict(state: State):
    state.record_judged(FILE, None, "unscanned", "rules", "inbox")
    state.record_judged(FILE, "cd" * 32, "clean", "rules", "inbox")
    assert state.judged_verdict(FILE, "rules") == "clean"
    assert state.judged_count() == 1


# ------------------------------------------------------------------------ write-ahead intents


def test_an_intent_is_pending_until_finished_also_across_a_restart(state: State):
    body = {"op": "quarantine", "watch": "inbox", "relpath_b64": "YS50eHQ=", "item_id": "i" * 32}
    state.add_intent("1" * 32, "quarantine", body)
    time.sleep(0.01)
    state.add_intent("2" * 32, "release", {"watch": "inbox"})
    again = reopened(state)
    try:
        pending = again.pending_intents()
        assert [(i.id, i.op) for i in pending] == [("1" * 32, "quarantine"), ("2" * 32, "release")]
        assert pending[0].body == body
        again.finish_intent("1" * 32, "done")
        assert [i.id for i in again.pending_intents()] == ["2" * 32]
    finally:
        again.close()
    last = State(again.path)
    try:
        assert [i.id for i in last.pending_intents()] == ["2" * 32]
    finally:
        last.close()


def test_an_intent_id_is_written_once(state: State):
    state.add_intent("1" * 32, "quarantine", {})
    with pytest.raises(sqlite3.IntegrityError):
        state.add_intent("1" * 32, "quarantine", {})


# ------------------------------------------------------------------------ the alert outbox


def test_an_alert_is_due_for_each_sink_until_delivered_there(state: State):
    payload = {"event": {"id": "a1"}, "file": {"path": "inbox/x.txt"}}
    state.enqueue_alert("a1", ["siem", "file"], payload)
    due = state.due_alerts(time.time())
    assert sorted(item.sink for item in due) == ["file", "siem"]
    assert all(item.payload == payload and item.attempts == 0 for item in due)
    state.mark_delivered("a1", "siem")
    assert [item.sink for item in state.due_alerts(time.time())] == ["file"]
    assert state.outbox_depth() == 1


def test_enqueueing_the_same_alert_again_changes_nothing(state: State):
    """At least once, never twice: a re-enqueued alert id (a restart, a beacon) is one row per sink."""
    state.enqueue_alert("a1", ["siem"], {"n": 1})
    state.mark_delivered("a1", "siem")
    state.enqueue_alert("a1", ["siem"], {"n": 2})
    assert state.due_alerts(time.time()) == [] and state.outbox_depth() == 0


def test_a_failed_delivery_waits_until_its_retry_time_and_counts_its_attempts(state: State):
    state.enqueue_alert("a1", ["siem"], {})
    now = time.time()
    state.mark_failed("a1", "siem", "OSError: " + "x" * 2000, now + 60)
    assert state.due_alerts(now) == []
    (item,) = state.due_alerts(now + 61)
    assert item.attempts == 1
    error = state._db.execute("SELECT last_error FROM outbox").fetchone()[0]
    assert len(error) == 500  # bounded
    state.mark_failed("a1", "siem", "again", now)
    assert state.due_alerts(now)[0].attempts == 2
    state.mark_delivered("a1", "siem")
    assert state._db.execute("SELECT last_error, payload FROM outbox").fetchone() == (None, "")


def test_the_outbox_bound_is_kept_by_a_count_not_a_query_per_alert_and_holds_after_a_restart(state: State):
    """`max_queued` counts undelivered rows (one per alert and sink): counted once at the first enqueue,
    then kept by enqueues and deliveries, so an alert near the bound costs no COUNT query; a reopened
    database counts again and refuses the same alerts."""
    state.max_queued = 4
    statements: list[str] = []
    state.enqueue_alert("a0", ["siem"], {})
    state._db.set_trace_callback(statements.append)
    state.enqueue_alert("a1", ["siem", "file"], {})
    state.enqueue_alert("a1", ["siem", "file"], {})  # the same alert again: no new row, not counted
    state.enqueue_alert("a2", ["siem"], {})
    assert state.outbox_depth() == 4
    assert state.enqueue_alert("a3", ["siem"], {}) is False
    state.mark_delivered("a1", "siem")
    state.mark_delivered("a1", "siem")  # delivered twice (at least once): counted once
    assert state.outbox_depth() == 3 and state.enqueue_alert("a3", ["siem"], {}) is True
    state._db.set_trace_callback(None)
    assert not [sql for sql in statements if "count(" in sql.lower()]
    again = reopened(state)
    try:
        again.max_queued = 4
        assert again.outbox_depth() == 4 and again.enqueue_alert("a4", ["siem"], {}) is False
        again.mark_delivered("a0", "siem")
        assert again.enqueue_alert("a4", ["siem"], {}) is True and again.outbox_depth() == 4
    finally:
        again.close()


def test_due_alerts_are_read_in_index_order_so_a_backlog_costs_no_sort_of_all_of_it(state: State):
    """After an outage every row of a backlog is due at once: each pass reads its 100 rows from the index
    in order (no temporary sort of the whole backlog), those that fell due first, oldest first."""
    for n in range(3):
        state.enqueue_alert(f"a{n}", ["siem"], {"n": n})
    state.mark_failed("a0", "siem", "down", time.time() + 0.5)  # a0 retried later: due after a1, a2
    statements: list[str] = []
    state._db.set_trace_callback(statements.append)
    assert [item.id for item in state.due_alerts(time.time() + 1)] == ["a1", "a2", "a0"]
    state._db.set_trace_callback(None)
    (query,) = [sql for sql in statements if "FROM outbox" in sql]  # as run, its values bound
    plan = state._db.execute("EXPLAIN QUERY PLAN " + query).fetchall()
    assert not any("TEMP B-TREE" in row[-1] for row in plan), plan


def test_undelivered_alerts_survive_a_restart_oldest_first(state: State):
    for n in range(3):
        state.enqueue_alert(f"a{n}", ["siem"], {"n": n})
        time.sleep(0.01)
    again = reopened(state)
    try:
        assert [item.id for item in again.due_alerts(time.time())] == ["a0", "a1", "a2"]
        assert [item.id for item in again.due_alerts(time.time(), limit=2)] == ["a0", "a1"]
    finally:
        again.close()


# ------------------------------------------------------------------------ operator releases


def test_an_operator_release_waits_for_its_file_and_is_spent_by_one_judgement(state: State):
    state.allow_operator_release("inbox", b"a.txt", "ab" * 32, "item-1")
    assert state.pending_operator_release("inbox", b"b.txt") is None
    assert state.pending_operator_release("outbox", b"a.txt") is None
    release = state.pending_operator_release("inbox", b"a.txt")
    assert release is not None and (release.item_id, release.sha256) == ("item-1", "ab" * 32)
    state.use_operator_release("inbox", b"a.txt")
    assert state.pending_operator_release("inbox", b"a.txt") is None
    assert state.earlier_release_of("ab" * 32) == "item-1"  # history, not an exemption


def test_the_latest_operator_release_of_a_file_is_the_one_that_applies(state: State):
    state.allow_operator_release("inbox", b"\xffraw.txt", "ab" * 32, "item-1")
    time.sleep(0.01)
    state.allow_operator_release("inbox", b"\xffraw.txt", "cd" * 32, "item-2")
    release = state.pending_operator_release("inbox", b"\xffraw.txt")
    assert release is not None and release.item_id == "item-2"
    state.use_operator_release("inbox", b"\xffraw.txt")  # spends both
    assert state.pending_operator_release("inbox", b"\xffraw.txt") is None


def test_a_revoked_operator_release_applies_to_nothing(state: State):
    released = state.allow_operator_release("inbox", b"a.txt", "ab" * 32, "item-1")
    state.revoke_operator_release(released)
    assert state.pending_operator_release("inbox", b"a.txt") is None
    assert state.earlier_release_of("ab" * 32) is None


# ------------------------------------------------------------------------ schema and failing writes


def test_a_new_database_is_at_the_current_schema(state: State):
    version = state._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION


def test_a_database_from_a_newer_version_is_refused_untouched(path: Path):
    State(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer"):
        State(path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION + 1
    )
    db.close()


def test_a_failed_write_is_remembered_until_writes_work_again_and_the_recovery_said_once(state: State):
    state._db.execute("PRAGMA max_page_count=1")  # SQLite's own "database or disk is full"
    with pytest.raises(sqlite3.OperationalError):
        for n in range(200):
            state.record_judged(FileIdentity(1, n, 3, 4, 5), "ab" * 32, "clean", "r" * 200, "inbox")
    assert state.write_problem is not None and "not writable" in state.write_problem
    assert state.take_recovered() is False
    state._db.execute("PRAGMA max_page_count=1073741823")
    assert state.probe() is True
    assert state.write_problem is None
    assert state.take_recovered() is True
    assert state.take_recovered() is False
