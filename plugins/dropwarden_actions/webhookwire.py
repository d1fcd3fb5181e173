"""The webhook sink's wire formats: batch bodies (HEC events, `_bulk` items), their answers read per item."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


class WebhookFailed(Exception):
    """The receiver refused, failed or did not answer in time: the outbox retries. Its message names the
    status and the receiver's reason, never the token or the body."""


def chunks(items: list[bytes], max_items: int, max_bytes: int) -> Iterator[tuple[int, int]]:
    """(start, end) ranges of `items` holding at most `max_items` each and at most `max_bytes` together;
    an item larger than `max_bytes` goes alone."""
    start, size = 0, 0
    for index, item in enumerate(items):
        if index > start and (index - start >= max_items or size + len(item) > max_bytes):
            yield start, index
            start, size = index, 0
        size += len(item)
    if start < len(items):
        yield start, len(items)


def hec_answer(reply: bytes) -> dict[str, Any]:
    """A HEC answer: code 0 (success), with `ackId` when the token requires indexer acknowledgement.
    Any other code raises (the whole request is refused: each of its events is retried)."""
    try:
        answer = json.loads(reply or b"{}")
    except ValueError:
        raise WebhookFailed("HEC answer is not JSON") from None
    if not isinstance(answer, dict):
        raise WebhookFailed("HEC answer is not a JSON object")
    if answer.get("code", 0) != 0:
        raise WebhookFailed(f"HEC code {answer.get('code')}: {short(str(answer.get('text', '')).encode())}")
    return answer


def hec_acked(reply: bytes, ack_ids: list[int]) -> set[int]:
    """The ack ids a `/services/collector/ack` answer (`{"acks": {"7": true, ...}}`) says are indexed."""
    try:
        acks = json.loads(reply or b"{}").get("acks") or {}
    except (ValueError, AttributeError):
        raise WebhookFailed("HEC ack answer is not JSON") from None
    return {ack for ack in ack_ids if acks.get(str(ack)) is True}


def bulk_outcomes(reply: bytes, count: int) -> list[WebhookFailed | None]:
    """Per item of a `_bulk` request of `count` items, in order: None when stored (2xx) or already
    stored under its id (409 on `create`: delivered before), else why it was refused (429, 5xx, ...:
    that item alone is retried). An answer that does not list every item fails them all."""
    try:
        answer = json.loads(reply)
    except ValueError:
        raise WebhookFailed("_bulk answer is not JSON") from None
    if not isinstance(answer, dict):
        raise WebhookFailed("_bulk answer is not a JSON object")
    items = answer.get("items")
    if not answer.get("errors") and not isinstance(items, list):
        return [None] * count  # an answer without items and without errors: all stored
    if not isinstance(items, list) or len(items) != count:
        raise WebhookFailed(f"_bulk answer lists {len(items or [])} items for {count} sent")
    outcomes: list[WebhookFailed | None] = []
    for item in items:
        result = next(iter(item.values()), {}) if isinstance(item, dict) and item else {}
        status = result.get("status", 0) if isinstance(result, dict) else 0
        if 200 <= status < 300 or status == 409:
            outcomes.append(None)
            continue
        error = (result.get("error") if isinstance(result, dict) else None) or {}
        kind = error.get("type", "error") if isinstance(error, dict) else "error"
        outcomes.append(WebhookFailed(f"_bulk item refused: status {status} ({short(str(kind).encode())})"))
    return outcomes


def as_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def short(text: bytes) -> str:
    """A receiver's reason, one line, bounded (it is the receiver's text, not ours)."""
    return text.decode("utf-8", "replace").replace("\n", " ")[:200]
