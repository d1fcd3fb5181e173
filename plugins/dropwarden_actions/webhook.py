"""The `webhook` alert sink: one HTTPS POST per alert as ECS, OCSF, a Splunk HEC event or an `_bulk` item."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from dropwarden_actions.settings import WebhookSinkSettings

SIGNATURE_HEADER = "X-Dropwarden-Signature"  # "sha256=<hex HMAC-SHA256 of the body under secret_file>"
ALERT_ID_HEADER = "X-Dropwarden-Alert-Id"
MAX_RESPONSE = 4 * 1024 * 1024  # bytes of a reply read at most (a _bulk reply lists every item)


class WebhookFailed(Exception):
    """The receiver refused, failed or did not answer in time: the outbox retries. Its message names the
    status and the receiver's reason, never the token or the body."""


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
    """The alert as an ECS or OCSF document (the formats module's when present; the ECS payload as is
    otherwise)."""
    try:
        from dropwarden_actions.formats import render
    except ImportError:
        return payload
    return json.loads(render(format_name, payload))


class WebhookSink:
    """A notify action: POSTs each alert; a non-2xx answer, a timeout, a HEC error code or any failed
    `_bulk` item raises, so the outbox retries. `_bulk` items are `create` actions with the alert id as
    `_id`: a redelivery of a stored alert answers 409 and counts as delivered, so the index holds each
    alert once."""

    kind = "notify"

    def __init__(self, settings: WebhookSinkSettings) -> None:
        self.id = settings.id
        self.settings = settings
        self._token = read_secret(settings.token_file, "token_file")
        self._secret = read_secret(settings.secret_file, "secret_file")
        self._tls = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        self._host = socket.gethostname()

    def describe(self) -> str:
        return f"POST each alert ({self.settings.format}) to {self.settings.url}"

    def send(self, payload: dict[str, Any]) -> None:
        body, content_type = self._body(payload)
        headers = {"Content-Type": content_type, "User-Agent": "dropwarden"}
        headers[ALERT_ID_HEADER] = str(payload.get("event", {}).get("id", ""))
        if self._token is not None:
            scheme = "Splunk" if self.settings.format == "splunk-hec" else "Bearer"
            headers["Authorization"] = f"{scheme} {self._token.decode()}"
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        _status, reply = self._post(body, headers)
        if self.settings.format == "splunk-hec":
            _check_hec(reply)
        elif self.settings.format == "elastic-bulk":
            _check_bulk(reply)

    def _body(self, payload: dict[str, Any]) -> tuple[bytes, str]:
        fmt = self.settings.format
        if fmt in ("ecs", "ocsf"):
            return _json(document(fmt, payload)), "application/json"
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
            return _json(envelope), "application/json"
        action = {"create": {"_index": self.settings.index or "dropwarden-alerts"}}
        alert_id = payload.get("event", {}).get("id")
        if alert_id:
            action["create"]["_id"] = str(alert_id)
        return _json(action) + b"\n" + _json(doc) + b"\n", "application/x-ndjson"

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        request = urllib.request.Request(self.settings.url, data=body, headers=headers, method="POST")
        context = self._tls if self.settings.url.startswith("https:") else None
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout, context=context) as response:
                return response.status, response.read(MAX_RESPONSE)
        except urllib.error.HTTPError as exc:
            reason = _short(exc.read(2048) if exc.fp else b"") or exc.reason
            raise WebhookFailed(f"HTTP {exc.code} from {self.settings.url}: {reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            why = getattr(exc, "reason", None) or exc
            raise WebhookFailed(f"{self.settings.url} not reached: {why}") from None

    def close(self) -> None:
        pass


def _check_hec(reply: bytes) -> None:
    try:
        answer = json.loads(reply or b"{}")
    except ValueError:
        raise WebhookFailed("HEC answer is not JSON") from None
    if answer.get("code", 0) != 0:
        raise WebhookFailed(f"HEC code {answer.get('code')}: {_short(str(answer.get('text', '')).encode())}")


def _check_bulk(reply: bytes) -> None:
    """A `_bulk` answer with `errors: true` lists each item's status: any failure but 409 (already
    stored under that id) raises."""
    try:
        answer = json.loads(reply)
    except ValueError:
        raise WebhookFailed("_bulk answer is not JSON") from None
    if not answer.get("errors"):
        return
    for item in answer.get("items", []):
        result = next(iter(item.values()), {}) if isinstance(item, dict) else {}
        status = result.get("status", 0)
        if status >= 300 and status != 409:
            error = result.get("error") or {}
            kind = error.get("type", "error") if isinstance(error, dict) else "error"
            raise WebhookFailed(f"_bulk item refused: status {status} ({_short(str(kind).encode())})")


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _epoch(timestamp: Any) -> float | None:
    try:
        return round(datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp(), 3)
    except ValueError:
        return None


def _short(text: bytes) -> str:
    """A receiver's reason, one line, bounded (it is the receiver's text, not ours)."""
    return text.decode("utf-8", "replace").replace("\n", " ")[:200]
