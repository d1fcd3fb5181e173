"""[cluster] parts without processes: the settings contract, role "all" free of Redis, and a verdict
judged on a judge host that is the same as one judged here."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from io import BytesIO

import pytest
import redis
from pydantic import ValidationError

from dropwarden.cluster import codec
from dropwarden.cluster.connect import client
from dropwarden.cluster.settings import ClusterSettings
from dropwarden.config import ConfigError, Settings
from dropwarden.judge.intake import FileIdentity, Snapshot
from dropwarden.runtime import build_runtime

from .cluster_harness import RedisServer
from .conftest import require
from .rsyslog_server import make_certificates
from .test_daemon import PII


def test_the_cluster_keys_of_the_issue_are_the_contract():
    """role, url (redis:// or rediss://), username and password_file; role "all" is the default."""
    settings = ClusterSettings(
        role="watch", url="rediss://redis.example:6380/0", username="dropwarden", password_file="/etc/p"
    )
    assert (settings.role, settings.username, str(settings.password_file)) == (
        "watch",
        "dropwarden",
        "/etc/p",
    )
    assert Settings().cluster.role == "all"


@pytest.mark.parametrize(
    "url",
    ["http://redis.example", "redis://dropwarden:secret@redis.example:6379/0", "unix:///run/redis.sock"],
)
def test_a_url_that_is_not_redis_or_holds_a_password_is_refused(url):
    with pytest.raises(ValidationError):
        ClusterSettings(url=url)


def test_role_all_never_imports_redis(tmp_path):
    """One host, as before: building the daemon's parts for role "all" loads no Redis client."""
    code = (
        "import sys\n"
        "from dropwarden.config import Settings\n"
        "from dropwarden.assembly import _remote\n"
        "import dropwarden.service, dropwarden.pipeline, dropwarden.commands.run\n"
        "assert _remote(Settings(), None) is None\n"
        "assert 'redis' not in sys.modules, 'redis imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr


def _snapshot(data: bytes, display_path: str = "") -> Snapshot:
    return Snapshot(display_path, data, hashlib.sha256(data).hexdigest(), FileIdentity(0, 0, len(data), 0, 0),
                    0o100600, 0, 0, 1, 0)  # fmt: skip


def _zip_with_pii() -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inner/customers 090-1234-5678.txt", PII)
        archive.writestr("notes.txt", "nothing here\n")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data", [PII.encode(), b"plain words only\n", _zip_with_pii(), b"\x7fELF\x00\x01" * 50]
)
def test_a_verdict_sent_through_the_cluster_is_the_verdict_judged_here(tmp_path, data):
    """Content judged on a judge host, encoded for Redis and concluded on the watcher with the file's name,
    gives the very Judgement the one host would have given: findings, counts, problems, runs, type."""
    runtime = build_runtime(Settings(state={"dir": str(tmp_path)}, ocr={"enabled": False}))
    try:
        judge = runtime.judge
        snapshot = _snapshot(data, "/drop/inbox/report.txt")
        name, name_runs = judge.judge_relative_name("report.txt", snapshot.display_path)
        here = judge.judge_snapshot(snapshot, name, name_runs)
        sent = codec.decode(codec.encode(judge.judge_content(_snapshot(data))))
        there = judge.conclude(snapshot, sent, name, name_runs)
    finally:
        runtime.close()
    assert there.verdict.kind == here.verdict.kind
    assert [f.to_dict() for f in there.verdict.findings] == [f.to_dict() for f in here.verdict.findings]
    assert there.verdict.counts_dicts() == here.verdict.counts_dicts()
    assert there.verdict.reason == here.verdict.reason
    assert [(r.detector, r.view, r.findings.total, str(r.problem)) for r in there.runs] == [
        (r.detector, r.view, r.findings.total, str(r.problem)) for r in here.runs
    ]
    assert there.file_type == here.file_type


def test_rediss_connects_as_the_acl_user_and_verifies_the_server_certificate(tmp_path):
    """rediss://: TLS against ssl_ca_file with the host name checked, the ACL user's password read from
    password_file; a server whose certificate another CA signed is refused."""
    require(shutil.which("redis-server") is not None and shutil.which("openssl") is not None, "redis-server")
    certs = make_certificates(tmp_path / "certs")
    other = make_certificates(tmp_path / "other")
    server = RedisServer(tmp_path / "redis", tls=certs, password="s3cret-pass").start()
    try:
        (tmp_path / "redis.pass").write_text("s3cret-pass\n")
        settings = ClusterSettings(
            url=server.url,
            username="dropwarden",
            password_file=tmp_path / "redis.pass",
            ssl_ca_file=certs["ca"],
        )
        assert client(settings).ping()
        with pytest.raises(redis.ConnectionError):
            client(settings.model_copy(update={"ssl_ca_file": other["ca"]})).ping()
        with pytest.raises(redis.ConnectionError):  # plain redis:// to a TLS port
            client(settings.model_copy(update={"url": server.url.replace("rediss", "redis")})).ping()
    finally:
        server.stop()


def _fingerprints(state_dir, key_file=None) -> set[str]:
    cluster = {"fingerprint_key_file": str(key_file)} if key_file else {}
    runtime = build_runtime(Settings(state={"dir": str(state_dir)}, ocr={"enabled": False}, cluster=cluster))
    try:
        content = runtime.judge.judge_content(_snapshot(PII.encode()))
    finally:
        runtime.close()
    found = {f.fingerprint for run in content.runs for f in run.findings}
    assert found
    return found


def test_hosts_with_the_cluster_fingerprint_key_fingerprint_a_value_alike(tmp_path):
    """Each host's own key (the state dir's) fingerprints one value differently; with `[cluster]
    fingerprint_key_file` copied to every host, every judge gives it the same fingerprint. A key file
    that is missing or not a key stops the start with a configuration error."""
    key_file = tmp_path / "fingerprint.key"
    key_file.write_text("ab" * 32 + "\n")
    assert _fingerprints(tmp_path / "one") != _fingerprints(tmp_path / "two")
    assert _fingerprints(tmp_path / "one", key_file) == _fingerprints(tmp_path / "two", key_file)
    (tmp_path / "short.key").write_text("abcd\n")
    for bad in (tmp_path / "missing.key", tmp_path / "short.key"):
        with pytest.raises(ConfigError, match="fingerprint_key_file"):
            _fingerprints(tmp_path / "one", bad)


def test_files_in_flight_hold_at_most_their_budget_of_snapshot_bytes():
    """Before a file is read the largest file there may be is reserved, and once read it keeps what it
    read: with room for two largest files, a third waits until one turns out small; a lone file always
    goes, even one larger than the budget."""
    from dropwarden.cluster.budget import SnapshotBudget

    budget = SnapshotBudget(100, 40)
    assert budget.reserve() and budget.reserve() and budget.held == 80
    assert not budget.has_room() and not budget.reserve()  # 80 + 40 > 100: the third waits
    kept = budget.shrink(40, 5)  # the first file was 5 bytes
    assert budget.has_room() and budget.reserve() and budget.held == 5 + 40 + 40
    budget.release(kept)
    budget.release(40)
    budget.release(40)
    assert budget.held == 0
    alone = SnapshotBudget(10, 40)  # a budget smaller than the largest file still lets one through
    assert alone.reserve() and not alone.reserve()
