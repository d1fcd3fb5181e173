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

from dropwarden.act.alerts import AlertDispatcher
from dropwarden.config import AlertsSettings
from dropwarden.state import State
from dropwarden_actions.settings import WebhookSinkSettings
from dropwarden_actions.webhook import WebhookSink

from .alert_samples import SECRET_CARD, sample_alert

TOKEN = "hec-token-0b7f3c1e-SEKRET"
ACK_TOKEN = "hec-token-with-indexer-ack-SEKRET"
KEY = b"hmac-key-for-tests"
CARD = SECRET_CARD


class Receiver(BaseHTTPRequestHandler):
    """HEC at /services/collector/event (several events per request) with indexer acknowledgement at
    /services/collector/ack for ACK_TOKEN, `_bulk` at /_bulk (several items per request). Every other
    request is answered 503. ACK_TOKEN's requests need a channel; their first ackId is never
    acknowledged, the others on the second poll. A `_bulk` item of an even-numbered alert is refused
    (429) the first time its id is seen, the others in the same request stored."""

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
        if self.path == "/services/collector/ack":
            return self._hec_ack(json.loads(body)["acks"])
        if self.path == "/services/collector/event":
            return self._hec(body)
        return self._bulk(body)

    def _hec(self, body: bytes) -> None:
        srv = self.server
        acked = self.headers.get("Authorization") == f"Splunk {ACK_TOKEN}"
        if acked and not self.headers.get("X-Splunk-Request-Channel"):
            return self._answer(400, {"text": "Data channel is missing", "code": 10})
        events = hec_events(body)
        with srv.lock:
            srv.batch_sizes.append(len(events))
            for event in events:
                assert set(event) >= {"time", "host", "source", "sourcetype", "event"}
                srv.stored.setdefault(event["event"]["event"]["id"], []).append(event)
            if not acked:
                return self._answer(200, {"text": "Success", "code": 0})
            ack_id = srv.next_ack
            srv.next_ack += 1
            srv.ack_events[ack_id] = [event["event"]["event"]["id"] for event in events]
        self._answer(200, {"text": "Success", "code": 0, "ackId": ack_id})

    def _hec_ack(self, ack_ids: list[int]) -> None:
        srv = self.server
        with srv.lock:
            answer = {}
            for ack_id in ack_ids:
                srv.polls[ack_id] = srv.polls.get(ack_id, 0) + 1
                answer[str(ack_id)] = ack_id != 0 and srv.polls[ack_id] >= 2
        self._answer(200, {"acks": answer})

    def _bulk(self, body: bytes) -> None:
        srv = self.server
        lines = body.decode().splitlines()
        items = []
        with srv.lock:
            srv.batch_sizes.append(len(lines) // 2)
            for action_line, document_line in zip(lines[::2], lines[1::2], strict=True):
                doc_id = json.loads(action_line)["create"]["_id"]
                srv.sent.append(doc_id)
                if doc_id in srv.stored:
                    status = 409  # already stored: a duplicate by id, not stored twice
                elif int(doc_id.rsplit("-", 1)[1]) % 2 == 0 and doc_id not in srv.refused:
                    srv.refused.add(doc_id)
                    status = 429
                else:
                    srv.stored[doc_id] = [json.loads(document_line)]
                    status = 201
                item = {"create": {"_id": doc_id, "status": status}}
                if status >= 300:
                    item["create"]["error"] = {"type": "es_rejected_execution_exception", "reason": "busy"}
                items.append(item)
        self._answer(
            200, {"took": 1, "errors": any(i["create"]["status"] >= 300 for i in items), "items": items}
        )

    def _answer(self, status: int, document: dict) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def hec_events(body: bytes) -> list[dict]:
    """The events of a HEC request body: JSON objects one after another, as Splunk reads them."""
    decoder, text, events, at = json.JSONDecoder(), body.decode(), [], 0
    while at < len(text.rstrip()):
        event, at = decoder.raw_decode(text, at)
        events.append(event)
        while at < len(text) and text[at].isspace():
            at += 1
    return events


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
        self.sent: list[str] = []  # _bulk item ids in the order they came
        self.batch_sizes: list[int] = []  # alerts per HEC or _bulk request let through
        self.next_ack = 0
        self.ack_events: dict[int, list[str]] = {}
        self.polls: dict[int, int] = {}


@pytest.fixture
def receiver() -> Iterator[ReceiverServer]:
    server = ReceiverServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def alert(alert_id: str) -> dict:
    return sample_alert(alert_id, path="/srv/inbox/a.txt", size=10, audit_seq=7)


def deliver_all(
    tmp_path: Path, url: str, fmt: str, count: int, token: str = TOKEN, **options: object
) -> tuple[State, list[str]]:
    """Raise `count` alerts for a webhook sink (`options`: more of its settings) and run the dispatcher
    until the outbox is empty; returns the state and every error delivery reported (the sink's health
    messages, the outbox's last errors)."""
    (tmp_path / "hec.token").write_text(token + "\n")
    (tmp_path / "hook.key").write_bytes(KEY + b"\n")
    sink_settings = WebhookSinkSettings(
        type="webhook",
        name="siem",
        url=url,
        format=fmt,
        token_file=tmp_path / "hec.token",
        secret_file=tmp_path / "hook.key",
        timeout=5,
        **options,
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


def test_every_alert_reaches_a_splunk_hec_that_fails_half_the_requests_several_per_request(
    tmp_path, receiver, caplog
):
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{receiver.server_port}/services/collector/event"
    state, errors = deliver_all(tmp_path, url, "splunk-hec", 12)
    assert state.outbox_depth() == 0
    assert sorted(receiver.stored) == sorted(f"alert-{n}" for n in range(12))
    assert max(receiver.batch_sizes) > 1  # batched: several events in one request
    assert all(receiver.signed_ok) and set(receiver.auth) == {f"Splunk {TOKEN}"}
    event = receiver.stored["alert-0"][0]
    assert event["source"] == "dropwarden" and event["event"]["file"]["name"] == "a.txt"
    assert any("HTTP 503" in error for error in errors)
    assert not any(TOKEN in error for error in errors) and TOKEN not in caplog.text
    assert not any(CARD.encode() in body for body in receiver.bodies)


def test_a_hec_token_with_indexer_acknowledgement_counts_an_alert_only_once_acknowledged(
    tmp_path, receiver, caplog
):
    """Each request's ackId is polled on the sink's channel until acknowledged; the events of the one
    never acknowledged are sent again, with the same alert ids, until another request carrying them is."""
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{receiver.server_port}/services/collector/event"
    state, errors = deliver_all(tmp_path, url, "splunk-hec", 8, ACK_TOKEN, ack=True, ack_timeout=0.5)
    assert state.outbox_depth() == 0
    ids = [f"alert-{n}" for n in range(8)]
    acked = {
        i
        for ack, events in receiver.ack_events.items()
        if receiver.polls.get(ack, 0) >= 2 and ack
        for i in events
    }
    assert acked == set(ids)  # every alert in a request whose ackId was acknowledged
    never = set(receiver.ack_events[0])
    assert never and all(len(receiver.stored[i]) >= 2 for i in never)  # resent
    assert all({e["event"]["event"]["id"] for e in receiver.stored[i]} == {i} for i in ids)  # same id
    assert sorted(receiver.stored) == ids and all(receiver.signed_ok)
    assert any("acknowledgement 0 not received" in error for error in errors)
    assert not any(ACK_TOKEN in error for error in errors) and ACK_TOKEN not in caplog.text


def test_a_refused_bulk_item_is_retried_alone_and_the_index_holds_each_alert_once(tmp_path, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{receiver.server_port}/_bulk"
    state, errors = deliver_all(tmp_path, url, "elastic-bulk", 10)
    assert state.outbox_depth() == 0
    assert sorted(receiver.stored) == sorted(f"alert-{n}" for n in range(10))
    assert all(len(docs) == 1 for docs in receiver.stored.values())
    assert max(receiver.batch_sizes) > 1  # one request carried several items
    # An item stored (201) is never sent again: only the refused ones (and those of failed requests) are.
    assert receiver.sent.count("alert-1") == 1 and receiver.sent.count("alert-2") == 2
    assert all(receiver.signed_ok)
    assert any("status 429" in error for error in errors)
    assert not any(TOKEN in error for error in errors) and TOKEN not in caplog.text


def test_a_batch_holds_at_most_batch_size_alerts_and_batch_bytes(tmp_path, receiver):
    url = f"http://127.0.0.1:{receiver.server_port}/_bulk"
    state, _ = deliver_all(tmp_path, url, "elastic-bulk", 9, batch_size=3)
    assert state.outbox_depth() == 0 and max(receiver.batch_sizes) == 3
    receiver.batch_sizes.clear()
    (tmp_path / "b").mkdir()
    state, _ = deliver_all(tmp_path / "b", url, "elastic-bulk", 9, batch_bytes=1024)
    assert state.outbox_depth() == 0 and max(receiver.batch_sizes) == 1  # two items are over 1024 bytes


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
