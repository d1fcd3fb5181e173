"""The webhook sink against a real HTTP receiver started here, speaking Splunk HEC and Elasticsearch
`_bulk`, that fails half of what it is sent: every alert arrives (once per id in the index), every body's
HMAC signature verifies, a refused `_bulk` item is retried, and the token is in no error, log or record."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dropwarden.act.alerts import AlertDispatcher, alert_payload
from dropwarden.config import AlertsSettings
from dropwarden.findings import Finding, Location, Severity
from dropwarden.state import State
from dropwarden_actions.settings import WebhookSinkSettings
from dropwarden_actions.webhook import WebhookSink

TOKEN = "hec-token-0b7f3c1e-SEKRET"
KEY = b"hmac-key-for-tests"
CARD = "4111111111111111"


class Receiver(BaseHTTPRequestHandler):
    """HEC at /services/collector/event, `_bulk` at /_bulk. Every other request is answered 503; a
    `_bulk` request that is let through refuses its item (429) the first time that id is seen."""

    server: ReceiverServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        with srv.lock:
            srv.requests += 1
            fail = srv.requests % 2 == 1
            srv.bodies.append(body)
            srv.auth.append(self.headers.get("Authorization"))
            expected = "sha256=" + hmac.new(KEY, body, hashlib.sha256).hexdigest()
            srv.signed_ok.append(
                hmac.compare_digest(expected, self.headers.get("X-Dropwarden-Signature", ""))
            )
        if fail:
            return self._answer(503, {"text": "Server is busy", "code": 9})
        if self.path == "/services/collector/event":
            event = json.loads(body)
            assert set(event) >= {"time", "host", "source", "sourcetype", "event"}
            with srv.lock:
                srv.stored.setdefault(event["event"]["event"]["id"], []).append(event)
            return self._answer(200, {"text": "Success", "code": 0})
        action_line, document_line = body.decode().splitlines()
        doc_id = json.loads(action_line)["create"]["_id"]
        with srv.lock:
            first_time = doc_id not in srv.refused
            srv.refused.add(doc_id)
            if not first_time and doc_id not in srv.stored:
                srv.stored[doc_id] = [json.loads(document_line)]
                status = 201
            elif first_time:
                status = 429
            else:
                status = 409  # already stored: a duplicate by id, not stored twice
        item = {"create": {"_id": doc_id, "status": status}}
        if status >= 300:
            item["create"]["error"] = {"type": "es_rejected_execution_exception", "reason": "queue full"}
        self._answer(200, {"took": 1, "errors": status >= 300, "items": [item]})

    def _answer(self, status: int, document: dict) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class ReceiverServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Receiver)
        self.lock = threading.Lock()
        self.requests = 0
        self.bodies: list[bytes] = []
        self.auth: list[str | None] = []
        self.signed_ok: list[bool] = []
        self.stored: dict[str, list[dict]] = {}
        self.refused: set[str] = set()


@pytest.fixture
def receiver() -> Iterator[ReceiverServer]:
    server = ReceiverServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def alert(alert_id: str) -> dict:
    card = Finding(
        type="CREDIT_CARD",
        rule="pii.credit_card",
        detector="regex",
        detector_version="1",
        severity=Severity.HIGH,
        confidence=0.9,
        location=Location("text", line=1, column=1, offset=0, length=16),
        excerpt=CARD,
        fingerprint="f" * 16,
        extra={"value": CARD},
    )
    return alert_payload(
        alert_id=alert_id,
        watch="inbox",
        path="/srv/inbox/a.txt",
        sha256="ab" * 32,
        size=10,
        outcome="finding",
        reason=None,
        findings=(card,),
        actions=("quarantine", "alert"),
        audit_seq=7,
    )


def deliver_all(tmp_path: Path, url: str, fmt: str, count: int) -> tuple[State, list[str]]:
    """Raise `count` alerts for a webhook sink and run the dispatcher until the outbox is empty; returns
    the state and every error delivery reported (the sink's health messages, the outbox's last errors)."""
    (tmp_path / "hec.token").write_text(TOKEN + "\n")
    (tmp_path / "hook.key").write_bytes(KEY + b"\n")
    sink_settings = WebhookSinkSettings(
        type="webhook",
        name="siem",
        url=url,
        format=fmt,
        token_file=tmp_path / "hec.token",
        secret_file=tmp_path / "hook.key",
        timeout=5,
    )
    settings = AlertsSettings(sink=[sink_settings], retry_initial=0.01, retry_max=0.05)
    state = State(tmp_path / "state.db")
    errors: list[str] = []
    dispatcher = AlertDispatcher(
        state,
        {"siem": WebhookSink(sink_settings)},
        settings,
        lambda sink, problem: errors.append(str(problem)),
    )
    for n in range(count):
        state.enqueue_alert(f"alert-{n}", ["siem"], alert(f"alert-{n}"))
    deadline = time.monotonic() + 30
    while state.outbox_depth() and time.monotonic() < deadline:
        dispatcher.deliver_due()
        errors.extend(row[0] for row in state._db.execute("SELECT last_error FROM outbox") if row[0])
        time.sleep(0.02)
    return state, errors


def test_every_alert_reaches_a_splunk_hec_that_fails_half_the_requests(tmp_path, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{receiver.server_port}/services/collector/event"
    state, errors = deliver_all(tmp_path, url, "splunk-hec", 6)
    assert state.outbox_depth() == 0
    assert sorted(receiver.stored) == [f"alert-{n}" for n in range(6)]
    assert receiver.requests >= 12  # each failed at least once
    assert all(receiver.signed_ok) and set(receiver.auth) == {f"Splunk {TOKEN}"}
    event = receiver.stored["alert-0"][0]
    assert event["source"] == "dropwarden" and event["event"]["file"]["name"] == "a.txt"
    assert any("HTTP 503" in error for error in errors)
    assert not any(TOKEN in error for error in errors) and TOKEN not in caplog.text
    assert not any(CARD.encode() in body for body in receiver.bodies)


def test_a_refused_bulk_item_is_retried_and_the_index_holds_each_alert_once(tmp_path, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{receiver.server_port}/_bulk"
    state, errors = deliver_all(tmp_path, url, "elastic-bulk", 5)
    assert state.outbox_depth() == 0
    assert sorted(receiver.stored) == [f"alert-{n}" for n in range(5)]
    assert all(len(docs) == 1 for docs in receiver.stored.values())
    assert all(receiver.signed_ok)
    assert any("status 429" in error for error in errors)
    assert not any(TOKEN in error for error in errors) and TOKEN not in caplog.text


def test_a_redelivered_bulk_item_already_stored_counts_as_delivered(tmp_path, receiver):
    url = f"http://127.0.0.1:{receiver.server_port}/_bulk"
    sink_settings = WebhookSinkSettings(type="webhook", url=url, format="elastic-bulk")
    sink = WebhookSink(sink_settings)
    receiver.requests = 1  # the next request is let through
    receiver.refused.add("alert-x")
    receiver.stored["alert-x"] = [{}]
    sink.send(alert("alert-x"))  # answered 409: no exception, nothing stored twice
    assert receiver.stored["alert-x"] == [{}]


def test_an_unreadable_token_file_is_refused_without_its_content(tmp_path):
    settings = WebhookSinkSettings(
        type="webhook", url="https://hec.example/x", token_file=tmp_path / "absent.token"
    )
    with pytest.raises(ValueError, match=r"token_file .* not readable"):
        WebhookSink(settings)


def test_a_url_with_credentials_in_it_is_refused():
    with pytest.raises(ValueError):
        WebhookSinkSettings(type="webhook", url=f"https://user:{TOKEN}@hec.example/x")
