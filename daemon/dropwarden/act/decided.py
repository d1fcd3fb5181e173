"""Decided, not yet acted: the state rows that let a restart act once on a recorded decision instead of
judging the file again (and recording a second decision).

A row is committed before its decision record is appended, so a process killed at any moment leaves
either a row whose record never made it into the audit log (dropped at the next start: the file is judged
as if for the first time) or a row whose record is there (kept: the file is acted on as it says, when its
identity, sha256 and ruleset version are unchanged; otherwise judged again, the new record naming the one
it supersedes). The row goes in the transaction that records the file as judged.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from dropwarden.act.fsops import open_subdir_chain
from dropwarden.act.policy import Decision
from dropwarden.act.records import identity_fields, shown_in_clear
from dropwarden.audit import AuditLog
from dropwarden.findings import Finding, Location, Severity, TypeCount
from dropwarden.judge.intake import Snapshot, take_snapshot
from dropwarden.judge.judge import Judge, Judgement
from dropwarden.state import State
from dropwarden.verdict import Verdict, VerdictKind
from dropwarden.watch.activewatch import ActiveWatch
from dropwarden.watch.settle import WorkItem

CHANGED = "changed_since_decision"
RULESET_CHANGED = "ruleset_changed"


@dataclass
class Decided:
    """A judged file between its decision and its actions: what the record and the act stage need.
    `resumed`: a decision recorded before a restart, acted on now (no new record)."""

    watch: ActiveWatch
    dir_fd: int  # the file's folder, open until the batch is acted on
    item: WorkItem
    judgement: Judgement
    started: float
    relpath_bytes: bytes
    body: dict[str, Any] = field(default_factory=dict)
    decision: Decision = None  # type: ignore[assignment]
    planned: list[dict[str, Any]] = field(default_factory=list)
    recorded: tuple[Finding, ...] = ()
    released: bool = False  # an operator release was waiting for this path: spent once recorded
    audit_seq: int | None = None  # its decision record's
    judged_at: float = field(default_factory=time.perf_counter)
    resumed: bool = False
    row: bool = False  # its row is in the state database (`remember`, or recorded before a restart)


@dataclass(frozen=True)
class Earlier:
    """A decision recorded before this start and not acted on (its row, checked against the log)."""

    watch: str
    relpath: bytes
    body: dict[str, Any]

    def superseded(self, why: str) -> dict[str, Any]:
        """What a new decision record on the same file says of this one."""
        return {"log_id": self.body["log_id"], "seq": self.body["seq"], "reason": why}


def remember(state: State, audit: AuditLog, ruleset: str, decided: list[Decided]) -> None:
    """Commit a row for each decision on read bytes, before its record is appended (one transaction)."""
    after, rows, now, kept = audit.last_seq, [], time.time(), []
    for each in decided:
        if each.judgement.snapshot is None:
            continue  # a file not read is judged again after a crash (nothing of it was judged)
        try:
            rows.append((each.watch.id, each.relpath_bytes, _row(each, ruleset, audit, after), now))
        except Exception:  # a finding that cannot be rendered: without a row, judged again after a crash
            continue
        kept.append(each)
    if rows:
        with state.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO decided (watch, relpath, body, verified, created)"
                " VALUES (?, ?, ?, 0, ?)",
                rows,
            )
    for each in kept:
        each.row = True


def _row(each: Decided, ruleset: str, audit: AuditLog, after: int) -> str:
    snapshot, decision = each.judgement.snapshot, each.decision
    assert snapshot is not None
    return json.dumps(
        {
            "log_id": audit.log_id,
            "after_seq": after,
            "ruleset": ruleset,
            "identity": identity_fields(snapshot.identity),
            "sha256": snapshot.sha256,
            "verdict": each.judgement.verdict.kind.value,
            "outcome": decision.outcome,
            "actions": list(decision.actions),
            "steps": each.planned,
            "path": each.body["path"],
            "reason": each.body["reason"],
            "findings": [f.to_dict() for f in decision.acting_findings],
            "counts": each.judgement.verdict.counts_dicts(),
            "released": each.released,
        },
        sort_keys=True,
    )


def settle(state: State, judged: list[tuple[Any, ...]], decided: list[Decided]) -> None:
    """Record the files whose every action happened as judged, and drop the rows of all the decisions
    acted on (whatever the outcome: what failed is judged again), in one transaction. Nothing to write:
    no transaction (an empty one would pass for a state database writable again)."""
    with_rows = [each for each in decided if each.row]
    if not judged and not with_rows:
        return

    def forget(db: sqlite3.Connection) -> None:
        db.executemany(
            "DELETE FROM decided WHERE watch=? AND relpath=?",
            [(each.watch.id, each.relpath_bytes) for each in with_rows],
        )

    state.record_judged_many(judged, then=forget)
    if with_rows:
        in_clear = all(shown_in_clear(each.judgement.name, each.item.relpath) for each in with_rows)
        state.names_deleted(path_in_audit_log=in_clear)


def earlier_decision(state: State, watch: str, relpath: bytes) -> Earlier | None:
    """The decision recorded before this start on (watch, relpath) and not acted on, if any."""
    rows = state.query(
        "SELECT body FROM decided WHERE watch=? AND relpath=? AND verified=1", (watch, relpath)
    )
    return Earlier(watch, relpath, json.loads(rows[0][0])) if rows else None


def moved_to(state: State, watch: str, relpath: bytes, to: bytes) -> None:
    """Recovery put the file a decision was on back under another name (its own was taken meanwhile)."""
    with state.transaction() as db:
        db.execute(
            "UPDATE OR REPLACE decided SET relpath=? WHERE watch=? AND relpath=?", (to, watch, relpath)
        )


def check_at_start(state: State, audit: AuditLog, watches: dict[str, ActiveWatch]) -> int:
    """Keep the rows whose decision record is in the log and whose file is still there (marked verified,
    with the record's seq); drop the rest. Returns how many were kept. Called before anything is judged."""
    rows = [
        (w, bytes(r), json.loads(b), bool(v))
        for w, r, b, v in state.query("SELECT watch, relpath, body, verified FROM decided")
    ]
    if not rows:
        return 0
    mine = [
        body["after_seq"] for _, _, body, verified in rows if not verified and body["log_id"] == audit.log_id
    ]
    recorded: dict[tuple[Any, ...], int] = {}
    for record in audit.records_after(min(mine)) if mine else []:
        if record["type"] == "decision":
            recorded[_key(record["body"])] = record["seq"]
    kept: list[tuple[str, str, bytes]] = []
    dropped: list[tuple[str, bytes]] = []
    for watch_id, relpath, body, verified in rows:
        if not verified:
            seq = recorded.get(_key({"watch": watch_id, **body})) if body["log_id"] == audit.log_id else None
            verified = seq is not None
            body = {**body, "seq": seq}
        watch = watches.get(watch_id)
        if verified and watch is not None and _present(watch, relpath):
            kept.append((json.dumps(body, sort_keys=True), watch_id, relpath))
        else:
            dropped.append((watch_id, relpath))
    with state.transaction() as db:
        db.executemany("UPDATE decided SET body=?, verified=1 WHERE watch=? AND relpath=?", kept)
        db.executemany("DELETE FROM decided WHERE watch=? AND relpath=?", dropped)
    if dropped:
        state.names_deleted(path_in_audit_log=False)
    return len(kept)


def resume(
    earlier: Earlier,
    judge: Judge,
    ruleset: str,
    watch: ActiveWatch,
    dir_fd: int,
    item: WorkItem,
    display: str,
    st: os.stat_result,
) -> Decided | dict[str, Any]:
    """The earlier decision, to be acted on now, when the file is the one it judged (identity without
    ctime, which a rolled-back hand-over changes; sha256 of the bytes read now) under the same ruleset;
    else what the new decision record says it supersedes."""
    body = earlier.body
    if body["ruleset"] != ruleset:
        return earlier.superseded(RULESET_CHANGED)
    known = body["identity"]
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (
        known["dev"],
        known["ino"],
        known["size"],
        known["mtime_ns"],
    ):
        return earlier.superseded(CHANGED)
    name, _ = judge.judge_relative_name(item.relpath, display)
    taken = take_snapshot(
        dir_fd,
        item.relpath.split(os.sep)[-1],
        display_path=display,
        max_size=int(judge.settings.limits.max_file_size),
        require_single_link=True,
    )
    if not isinstance(taken, Snapshot) or taken.sha256 != body["sha256"]:
        return earlier.superseded(CHANGED)
    findings = tuple(_finding(f) for f in body["findings"])
    counts = tuple(_count(c) for c in body["counts"])
    verdict = Verdict(VerdictKind(body["verdict"]), findings, (), counts)
    return Decided(
        watch,
        dir_fd,
        item,
        Judgement(name.show_path(display), verdict, snapshot=taken, name=name),
        time.perf_counter(),
        earlier.relpath,
        body={"path": body["path"], "reason": body["reason"], "decision_seq": body["seq"]},
        decision=Decision(body["outcome"], tuple(body["actions"]), findings),
        planned=body["steps"],
        recorded=findings,
        released=body["released"],
        audit_seq=body["seq"],
        resumed=True,
        row=True,
    )


def resumed_body(each: Decided) -> dict[str, Any]:
    """The audit record saying a decision recorded before the restart is acted on now."""
    return {"watch": each.watch.id, "path": each.body["path"], "decision_seq": each.audit_seq}


def _key(body: dict[str, Any]) -> tuple[Any, ...]:
    return (body.get("watch"), body.get("sha256"), json.dumps(body.get("identity"), sort_keys=True))


def _present(watch: ActiveWatch, relpath: bytes) -> bool:
    parts = [os.fsdecode(p) for p in relpath.split(b"/")]
    try:
        fd = open_subdir_chain(watch.root_fd, parts[:-1])
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
    finally:
        os.close(fd)


def _finding(data: dict[str, Any]) -> Finding:
    where = dict(data["location"])
    if "bbox" in where:
        where["bbox"] = tuple(where["bbox"])
    if "within" in where:
        where["within"] = tuple(where["within"])
    return Finding(
        data["type"],
        data["rule"],
        data["detector"],
        data["detector_version"],
        Severity.parse(data["severity"]),
        data["confidence"],
        Location(**where),
        data["excerpt"],
        data["fingerprint"],
        data.get("extra", {}),
    )


def _count(data: dict[str, Any]) -> TypeCount:
    return TypeCount(
        data["type"], data["count"], data["kept"], Severity.parse(data["severity"]), data["exact"]
    )
