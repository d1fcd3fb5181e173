"""The `webhook` alert sink: HTTPS POSTs of ECS or OCSF alerts, or batches of HEC events / `_bulk` items."""

from __future__ import annotations

import hashlib
import hmac
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from dropwarden_actions.formats.ecs import ecs_document
from dropwarden_actions.formats.ocsf import ocsf_document
from dropwarden_actions.settings import WebhookSinkSettings
from dropwarden_actions.webhookwire import (
    WebhookFailed,
    as_json,
    bulk_outcomes,
    chunks,
    hec_acked,
    hec_answer,
    short,
)

__all__ = ["WebhookFailed", "WebhookSink", "WebhookUnreachable"]

SIGNATURE_HEADER = "X-Dropwarden-Signature"  # "sha256=<hex HMAC-SHA256 of the body under secret_file>"
ALERT_ID_HEADER = "X-Dropwarden-Alert-Id"
MAX_RESPONSE = 4 * 1024 * 1024  # bytes of a reply read at most (a _bulk reply lists every item)
HEC_CHANNEL_HEADER = "X-Splunk-Request-Channel"
HEC_ACK_PATH = "/services/collector/ack"
BATCHED = ("splunk-hec", "elastic-bulk")  # the formats that carry several alerts per request


def read_secret(path: Path | None, what: str) -> bytes | None:
    """The first line of a secret file (token or HMAC key), read at start and at each reload."""
    if path is None:
        return None
    try:
        value = path.read_bytes().splitlines()[0].strip() if path.stat().st_size else b""
    except (OSError, IndexError) as exc:
        raise ValueError(f"{what} {path} not readable: {getattr(exc, 'strerror', None) or exc}") from None
    if not value:
        raise ValueError(f"{what} {path} is empty")
    return value


def document(format_name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The alert as an ECS or OCSF document (a new one: the payload is left as it is)."""
    return ocsf_document(payload) if format_name == "ocsf" else ecs_document(payload)


class WebhookSink:
    """A notify action that takes batches (`send_batch`): `splunk-hec` and `elastic-bulk` send up to
    `batch_size` alerts (`batch_bytes` in all) per request and read each alert's outcome from the answer;
    `ecs` and `ocsf` POST each alert alone. `_bulk` items are `create` actions with the alert id as
    `_id`: a redelivery of a stored alert answers 409 and counts as delivered, so the index holds each
    alert once. With `ack = true`, a HEC request's events count once the indexer acknowledged its
    `ackId` (polled at /services/collector/ack on this sink's channel), else they are retried (same id)."""

    kind = "notify"

    def __init__(self, settings: WebhookSinkSettings) -> None:
        self.id = settings.id
        self.settings = settings
        self._token = read_secret(settings.token_file, "token_file")
        self._secret = read_secret(settings.secret_file, "secret_file")
        self._tls = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        self._host = socket.gethostname()
        self._channel = str(uuid.uuid4())  # HEC: the channel this sink's ack ids belong to
        parts = urllib.parse.urlsplit(settings.url)
        self._ack_url = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, "/services/collector/ack", "", "")
        )

    def describe(self) -> str:
        batched = self.settings.format in BATCHED
        what = f"batches of up to {self.settings.batch_size} alerts" if batched else "each alert"
        return f"POST {what} ({self.settings.format}) to {self.settings.url}"

    def send(self, payload: dict[str, Any]) -> None:
        outcome = self.send_batch([payload])[0]
        if outcome is not None:
            raise outcome

    def send_batch(self, payloads: list[dict[str, Any]]) -> list[Exception | None]:
        """Per payload, in order: None (delivered) or why not (retried alone by the outbox)."""
        fmt = self.settings.format
        outcomes: list[Exception | None] = [None] * len(payloads)
        items = [self._item(payload) for payload in payloads]
        per_request = self.settings.batch_size if fmt in BATCHED else 1
        pending: list[tuple[int, int, int]] = []  # HEC (start, end, ackId) awaiting acknowledgement
        down: WebhookFailed | None = None
        for start, end in chunks(items, per_request, self.settings.batch_bytes):
            if down is not None:  # not reached: the rest of this pass waits for the retry
                outcomes[start:end] = [down] * (end - start)
                continue
            ids = [str(p.get("event", {}).get("id", "")) for p in payloads[start:end]]
            try:
                reply = self._post(self.settings.url, b"".join(items[start:end]), ids)
                if fmt == "elastic-bulk":
                    outcomes[start:end] = bulk_outcomes(reply, end - start)
                elif fmt == "splunk-hec":
                    ack_id = hec_answer(reply).get("ackId")
                    if self.settings.ack and isinstance(ack_id, int):
                        pending.append((start, end, ack_id))
            except WebhookFailed as exc:
                outcomes[start:end] = [exc] * (end - start)
                down = exc if isinstance(exc, WebhookUnreachable) else None
        if pending:
            acked = self._await_acks([ack for _, _, ack in pending])
            for start, end, ack in pending:
                if ack not in acked:
                    late = WebhookFailed(
                        f"HEC indexer acknowledgement {ack} not received within {self.settings.ack_timeout}s"
                    )
                    outcomes[start:end] = [late] * (end - start)
        return outcomes

    def _item(self, payload: dict[str, Any]) -> bytes:
        """The alert as this format's request body (ecs, ocsf) or as one item of a batched body."""
        fmt = self.settings.format
        if fmt in ("ecs", "ocsf"):
            return as_json(document(fmt, payload))
        doc = document("ecs", payload)
        if fmt == "splunk-hec":
            envelope = {
                "time": _epoch(payload.get("@timestamp")),
                "host": self._host,
                "source": "dropwarden",
                "sourcetype": self.settings.sourcetype,
                "event": doc,
            }
            if self.settings.index:
                envelope["index"] = self.settings.index
            return as_json(envelope) + b"\n"
        action = {"create": {"_index": self.settings.index or "dropwarden-alerts"}}
        alert_id = payload.get("event", {}).get("id")
        if alert_id:
            action["create"]["_id"] = str(alert_id)
        return as_json(action) + b"\n" + as_json(doc) + b"\n"

    def _await_acks(self, ack_ids: list[int]) -> set[int]:
        """The ack ids the indexer acknowledged before `ack_timeout` (polled, waits growing to 1 s); a
        poll that fails is tried again until then."""
        deadline = time.monotonic() + self.settings.ack_timeout
        acked: set[int] = set()
        wait = 0.05
        while True:
            waiting = [ack for ack in ack_ids if ack not in acked]
            try:
                acked |= hec_acked(self._post(self._ack_url, as_json({"acks": waiting}), []), waiting)
            except WebhookFailed:
                pass
            if len(acked) == len(ack_ids) or time.monotonic() + wait > deadline:
                return acked
            time.sleep(wait)
            wait = min(wait * 2, 1.0)

    def _post(self, url: str, body: bytes, alert_ids: list[str]) -> bytes:
        """POST `body` (signed, with the token); the answer's body. Raises WebhookFailed on a non-2xx
        answer, WebhookUnreachable when there was none."""
        fmt = self.settings.format
        headers = {"User-Agent": "dropwarden"}
        headers["Content-Type"] = "application/x-ndjson" if fmt == "elastic-bulk" else "application/json"
        if len(alert_ids) == 1:
            headers[ALERT_ID_HEADER] = alert_ids[0]
        if self._token is not None:
            headers["Authorization"] = (
                f"{'Splunk' if fmt == 'splunk-hec' else 'Bearer'} {self._token.decode()}"
            )
        if fmt == "splunk-hec":
            headers[HEC_CHANNEL_HEADER] = self._channel
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = f"sha256={hmac.new(self._secret, body, hashlib.sha256).hexdigest()}"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        context = self._tls if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout, context=context) as response:
                return response.read(MAX_RESPONSE)
        except urllib.error.HTTPError as exc:
            reason = short(exc.read(2048) if exc.fp else b"") or exc.reason
            raise WebhookFailed(f"HTTP {exc.code} from {url}: {reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            why = getattr(exc, "reason", None) or exc
            raise WebhookUnreachable(f"{url} not reached: {why}") from None

    def close(self) -> None:
        pass


class WebhookUnreachable(WebhookFailed):
    """No answer at all (refused, timed out): the rest of a pass is not tried against it."""


def _epoch(timestamp: Any) -> float | None:
    try:
        return round(datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp(), 3)
    except ValueError:
        return None
