"""Audit records from other processes (the CLI) while the daemon holds the log: a spool it ingests.

The log has one writer. A command that must audit an action while the daemon runs drops a request
file into `<state>/audit-spool/` and waits; the daemon appends the record, fsyncs, and answers with
a receipt holding the record's seq. No receipt in time means no record, and the command must not act.
The spool lives in the state directory, which only the daemon's user (and root) can write.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from dropwarden.audit.chain import AuditError, AuditLocked
from dropwarden.audit.log import AuditLog
from dropwarden.config import Settings

SPOOL = "audit-spool"
_REQUEST, _RECEIPT, _CLAIMED = ".request", ".receipt", ".cancelled"


def spool_dir(state_dir: Path) -> Path:
    return state_dir / SPOOL


def record_event(settings: Settings, kind: str, body: dict[str, Any]) -> int:
    """Append one durable record, directly when the log is free, else through the running daemon.

    Returns the record's seq; raises AuditError when neither way works in time.
    """
    try:
        log = AuditLog.open(settings.audit.path, settings.state.dir, settings.audit, background=False)
    except AuditLocked:
        return _through_daemon(settings.state.dir, kind, body, settings.audit.spool_timeout)
    try:
        seq = log.append(kind, body).seq
        log.sync()
    finally:
        log.close()
    return seq


def _through_daemon(state_dir: Path, kind: str, body: dict[str, Any], timeout: float) -> int:
    directory = spool_dir(state_dir)
    directory.mkdir(mode=0o700, exist_ok=True)
    token = uuid.uuid4().hex
    request = directory / (token + _REQUEST)
    tmp = directory / f".{token}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps({"type": kind, "body": body}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, request)
    receipt = directory / (token + _RECEIPT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if receipt.exists():
            return _take_receipt(receipt)
        time.sleep(0.05)
    try:
        os.rename(request, directory / (token + _CLAIMED))  # withdraw it, unless the daemon took it
    except FileNotFoundError:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if receipt.exists():
                return _take_receipt(receipt)
            time.sleep(0.05)
    else:
        (directory / (token + _CLAIMED)).unlink(missing_ok=True)
    raise AuditError(
        "the audit log is held by a running daemon that did not record the request in time; nothing was done"
    )


def _take_receipt(receipt: Path) -> int:
    seq = int(json.loads(receipt.read_text())["seq"])
    receipt.unlink(missing_ok=True)
    return seq


def ingest(state_dir: Path, log: AuditLog) -> int:
    """Append every pending request (daemon side), durably, then answer each with a receipt."""
    directory = spool_dir(state_dir)
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(_REQUEST))
    except FileNotFoundError:
        return 0
    done = 0
    for name in names:
        request = directory / name
        try:
            data = json.loads(request.read_bytes())
            kind, body = str(data["type"]), dict(data["body"])
        except (OSError, ValueError, KeyError, TypeError):
            request.rename(request.with_suffix(".rejected"))
            continue
        try:
            record = log.append(kind, {**body, "via": "spool"})
        except (ValueError, TypeError):
            request.rename(request.with_suffix(".rejected"))
            continue
        log.sync()
        token = name[: -len(_REQUEST)]
        tmp = directory / f".{token}.receipt.tmp"
        tmp.write_text(json.dumps({"seq": record.seq}))
        os.rename(tmp, directory / (token + _RECEIPT))
        request.unlink(missing_ok=True)
        done += 1
    return done
