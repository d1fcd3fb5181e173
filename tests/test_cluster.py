"""[cluster]: a watcher and judge processes through a real redis-server — every file judged on a judge
host, exactly one decision each, acted on where it landed, and no file bytes left in Redis."""

from __future__ import annotations

import shutil
import time

import pytest

from .cluster_harness import RedisServer, cluster_drop, judge, where_files_are
from .conftest import require
from .test_daemon import CLEAN, PII


@pytest.fixture
def redis_server(tmp_path):
    require(shutil.which("redis-server") is not None, "redis-server")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def seed(drop, count: int, start: int = 0) -> dict[str, str]:
    """`count` files, every third with PII, each with a unique first line; token -> expected place."""
    expected = {}
    for index in range(start, start + count):
        token = f"file-{index:05d}"
        body = PII if index % 3 == 0 else CLEAN
        (drop.inbox / f"{token}.txt").write_text(f"{token}\n{body}")
        expected[token] = "quarantine" if index % 3 == 0 else "outbound"
    return expected


def assert_each_file_once(drop, watcher, expected: dict[str, str], redis_server) -> None:
    """Every file in exactly its one place, exactly one decision record each, the audit log verifies, and
    no blob is left in Redis."""
    places = where_files_are(drop)
    assert {token: places.get(token) for token in expected} == {t: [p] for t, p in expected.items()}
    decisions = watcher.records("decision")
    per_file: dict[str, int] = {}
    for body in decisions:
        name = body["body"]["path"].rsplit("/", 1)[-1].removesuffix(".txt")
        per_file[name] = per_file.get(name, 0) + 1
    assert per_file == dict.fromkeys(expected, 1)
    verified = drop.verify_audit()
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert redis_server.blobs() == []


def test_files_are_judged_by_judge_hosts_and_acted_on_by_the_watcher(tmp_path, redis_server):
    """role "watch" sends each file's bytes through Redis; the judges' verdicts come back and the watcher
    quarantines PII and releases the rest: one decision per file, nothing left in Redis."""
    drop = cluster_drop(tmp_path / "run", redis_server.url)
    watcher = drop.daemon()
    judges = [judge(drop), judge(drop)]
    try:
        for process in judges:
            process.start()
        watcher.start()
        expected = seed(drop, 30)
        watcher.wait_for(lambda: len(watcher.records("decision")) >= 30, timeout=120, what="30 decisions")
        time.sleep(1.0)
    finally:
        watcher.stop()
        for process in judges:
            process.stop()
    assert_each_file_once(drop, watcher, expected, redis_server)
    assert redis_server.stats()["judged"] == 30  # each distinct content judged once, on a judge host
    findings = [r["body"] for r in watcher.records("decision") if r["body"]["outcome"] == "finding"]
    assert len(findings) == 10
    assert {"CREDIT_CARD", "EMAIL"} <= {f["type"] for f in findings[0]["findings"]}
