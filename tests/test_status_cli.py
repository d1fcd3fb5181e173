"""`dropwarden status` asks the real running daemon over its loopback endpoint: watches, queue, health,
alert sinks and the last decisions (masked as in the audit log), and says by its exit status whether
the daemon runs and is healthy."""

from __future__ import annotations

import json
import socket

from .conftest import run_cli
from .daemon_harness import metrics_port
from .test_daemon import CLEAN, PII, Drop, write


def test_status_shows_the_running_daemons_watches_sinks_and_last_decisions(tmp_path):
    drop = Drop(tmp_path)
    daemon = drop.daemon().start()
    try:
        write(drop.inbox / "memo.txt", PII)
        write(drop.inbox / "notes.txt", CLEAN)
        daemon.wait_for(lambda: len(daemon.records("decision")) == 2, what="both files judged")
        address = f"127.0.0.1:{metrics_port(daemon)}"
        answer = daemon.wait_for(
            lambda: (
                (r := run_cli("status", "--config", str(drop.config), "--address", address, "--json"))
                and json.loads(r.stdout)["sinks"]
                and (r.returncode, json.loads(r.stdout))
            ),
            what="the sink in the status",
        )
        code, status = answer
        assert code == 0 and status["status"] == "ok" and status["degraded"] == {}
        assert status["watches"] == {"inbox": {"path": str(drop.inbox), "lost": False}}
        assert status["queue"] == 0 and status["judged"] == {"finding": 1, "clean": 1}
        (sink,) = status["sinks"].values()
        assert set(sink) >= {"delivered", "failed", "queued", "oldest_age", "overflow"}
        recent = {d["path"].rpartition("/")[2]: d for d in status["recent"]}
        assert recent["memo.txt"]["outcome"] == "finding" and "CREDIT_CARD" in recent["memo.txt"]["types"]
        assert recent["notes.txt"]["outcome"] == "clean"
        assert "4111" not in json.dumps(status), "no raw value in the status"

        text = run_cli("status", "--config", str(drop.config), "--address", address)
        assert text.returncode == 0, text.stderr
        assert "inbox" in text.stdout and "memo.txt" in text.stdout and "last decisions" in text.stdout

        drop.inbox.rename(tmp_path / "inbox.old")  # the watch is lost: degraded
        degraded = daemon.wait_for(
            lambda: (r := run_cli("status", "--address", address, "--json")).returncode == 1 and r,
            what="degraded in the status",
        )
        assert json.loads(degraded.stdout)["watches"]["inbox"]["lost"] is True
    finally:
        daemon.stop()


def test_status_exits_3_when_no_daemon_answers():
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli("status", "--address", f"127.0.0.1:{port}")
    assert result.returncode == 3 and "no daemon answers" in result.stderr
    assert run_cli("status", "--address", "192.0.2.1:9468").returncode == 2, "loopback only"
