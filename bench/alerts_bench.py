"""Alert delivery: alerts/s from the durable outbox to a local rsyslogd over TCP and TLS, and the time to
drain a backlog after an outage.

    PYTHONPATH=daemon:plugins .venv/bin/python bench/alerts_bench.py [--count 5000] [--backlog 10000]
        [--webhook 5000]

A real rsyslogd (tests/rsyslog_server.py: TCP and TLS inputs on 127.0.0.1, a CA and certificate made
now) receives RFC 5424 messages in CEF from the `syslog` sink, driven by the daemon's own
`AlertDispatcher` over a `State` (SQLite WAL) outbox holding realistic alerts (three findings each).
Timed: from the first delivery pass until the outbox is empty; every message is then counted in what
rsyslogd wrote. Backlog: the receiver is stopped, `--backlog` alerts are queued and each tried once
(refused), the receiver is started again and every row made due (as its backoff would): the time from
then until the outbox is empty. Targets: >= 2,000 alerts/s over TCP, a 10,000 backlog in under 10 s.
`--webhook N`: N alerts to a local HTTP `_bulk` receiver, one per request and then 100 per request.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.rsyslog_server

from dropwarden.act.alerts import AlertDispatcher, alert_payload
from dropwarden.config import AlertsSettings
from dropwarden.findings import Finding, Location, Severity
from dropwarden.state import State
from dropwarden_actions.settings import WebhookSinkSettings
from dropwarden_actions.syslogsettings import SyslogSinkSettings
from dropwarden_actions.syslogsink import SyslogSink
from dropwarden_actions.webhook import WebhookSink
from tests.rsyslog_server import Rsyslog

SINK = "soc"


def payload(n: int) -> dict:
    findings = tuple(
        Finding(kind, f"{kind.lower()}.rule", "regex", "1.0.0", Severity.HIGH, 0.9,
                Location("text", line=n % 90 + 1, offset=40 * i, length=16), "", f"fp-{n}-{i}")
        for i, kind in enumerate(("CREDIT_CARD", "EMAIL_ADDRESS", "PHONE_NUMBER"))
    )  # fmt: skip
    return alert_payload(
        alert_id=f"bench-{n:08d}",
        watch="inbox",
        path=f"/srv/drop/inbox/report-{n}.txt",
        sha256=f"{n:064x}",
        size=4096,
        outcome="quarantined",
        reason=None,
        findings=findings,
        actions=("quarantine", "alert"),
        audit_seq=n,
        audit_head={"log_id": "bench", "seq": n, "hash": "0" * 64},
    )


def queue(state: State, start: int, count: int) -> None:
    for n in range(start, start + count):
        state.enqueue_alert(f"bench-{n:08d}", [SINK], payload(n))


def drain(dispatcher: AlertDispatcher, state: State) -> float:
    started = time.perf_counter()
    while state.outbox_depth():
        dispatcher.deliver_due()
    return time.perf_counter() - started


def received(server: Rsyslog, transport: str, count: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while (got := len(server.lines(transport))) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return got


def make_dispatcher(state: State, server: Rsyslog, transport: str) -> tuple[AlertDispatcher, SyslogSink]:
    tls = {"ca_file": server.certs["ca"]} if transport == "tls" else {}
    sink = SyslogSink(
        SyslogSinkSettings(
            type="syslog", name=SINK, address=f"127.0.0.1:{server.ports[transport]}",
            transport=transport, format="cef", **tls,
        )
    )  # fmt: skip
    settings = AlertsSettings(retry_initial=60.0, retry_max=60.0, max_queued=10**9)
    return AlertDispatcher(state, {SINK: sink}, settings), sink


def throughput(root: Path, server: Rsyslog, transport: str, count: int) -> dict:
    state = State(root / f"{transport}.db")
    queue(state, 0, count)
    dispatcher, sink = make_dispatcher(state, server, transport)
    seconds = drain(dispatcher, state)
    sink.close()
    state.close()
    got = received(server, transport, count)
    return {"transport": transport, "alerts": count, "seconds": round(seconds, 3),
            "alerts_per_s": round(count / seconds), "received": got}  # fmt: skip


def backlog(root: Path, server: Rsyslog, count: int) -> dict:
    before = len(server.lines("tcp"))
    server.stop()
    state = State(root / "backlog.db")
    queue(state, 10**7, count)
    dispatcher, sink = make_dispatcher(state, server, "tcp")
    for _ in range(count // 100 + 1):  # every row tried once against the stopped receiver (refused)
        dispatcher.deliver_due()
    tried = dispatcher.failed[SINK]
    server.start()
    with sqlite3.connect(state.path) as db:  # the backoff has passed
        db.execute("UPDATE outbox SET next_attempt=0 WHERE delivered IS NULL")
    seconds = drain(dispatcher, state)
    sink.close()
    state.close()
    got = received(server, "tcp", before + count) - before
    return {"backlog": count, "failed_attempts_during_outage": tried, "drain_seconds": round(seconds, 3),
            "alerts_per_s": round(count / seconds), "received": got}  # fmt: skip


class _BulkReceiver(BaseHTTPRequestHandler):
    """A local Elasticsearch `_bulk` endpoint that stores nothing: every item answered 201."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        items = [{"create": {"status": 201}} for _ in range(body.count(b"\n") // 2)]
        self.server.items += len(items)  # type: ignore[attr-defined]
        data = json.dumps({"errors": False, "items": items}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def webhook(root: Path, count: int, batch_size: int) -> dict:
    """Alerts/s from the outbox to a local HTTP `_bulk` receiver, `batch_size` alerts per request."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BulkReceiver)
    server.items = 0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state = State(root / f"webhook-{batch_size}.db")
    queue(state, 0, count)
    settings = WebhookSinkSettings(
        type="webhook", name=SINK, url=f"http://127.0.0.1:{server.server_port}/_bulk",
        format="elastic-bulk", batch_size=batch_size,
    )  # fmt: skip
    dispatcher = AlertDispatcher(state, {SINK: WebhookSink(settings)}, AlertsSettings(max_queued=10**9))
    seconds = drain(dispatcher, state)
    state.close()
    server.shutdown()
    server.server_close()
    return {"webhook": "elastic-bulk", "batch_size": batch_size, "alerts": count,
            "seconds": round(seconds, 3), "alerts_per_s": round(count / seconds),
            "received": server.items}  # type: ignore[attr-defined]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="alerts per transport")
    parser.add_argument("--backlog", type=int, default=10000, help="alerts queued during the outage")
    parser.add_argument("--transports", default="tcp,tls")
    parser.add_argument("--webhook", type=int, default=0, help="alerts to a local _bulk receiver (0: none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dropwarden-alerts-bench-") as tmp:
        root = Path(tmp)
        server = Rsyslog(root / "rsyslog").start()
        try:
            results = [throughput(root, server, t, args.count) for t in args.transports.split(",")]
            if args.backlog:
                results.append(backlog(root, server, args.backlog))
            if args.webhook:
                results += [webhook(root, args.webhook, size) for size in (1, 100)]
        finally:
            server.stop()
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
