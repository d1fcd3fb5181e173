"""The vision endpoint pool: several OpenAI-compatible endpoints, least in flight first, a breaker each."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from dropwarden_vision.backend_types import BackendError, endpoint_failure, safe_text
from dropwarden_vision.circuit import CLOSED, OPEN, CircuitBreaker, CircuitOpen
from dropwarden_vision.openai_backend import (
    ApiKey,
    EndpointStatusError,
    OpenAIBackend,
    _gate_for,
    resolve_api_key,
)
from dropwarden_vision.settings import vision_settings

if TYPE_CHECKING:
    from dropwarden.config import Settings
    from dropwarden.gate import Gate
    from dropwarden_vision.images import PreparedImage
    from dropwarden_vision.schema import Answer, VerdictSpec

log = structlog.get_logger("dropwarden.vision")

# Below this many seconds left to the request, a failed attempt is not tried on another endpoint.
MIN_FAILOVER_SECONDS = 0.1
# Statuses that say something about this endpoint right now (busy, timed out), not about the request.
_FAILOVER_STATUSES = frozenset({408, 429})


class NoEndpoint(CircuitOpen):
    """Every endpoint's circuit breaker is open (or holds its one trial call): nothing is asked."""


@dataclass
class Endpoint:
    """One endpoint of the pool: its backend, its circuit breaker and what it is doing now."""

    url: str  # for messages: without user:password
    backend: OpenAIBackend
    circuit: CircuitBreaker
    in_flight: int = 0
    requests: int = 0


class EndpointPool:
    """A `VisionBackend` over the endpoints `[vision] base_url` lists.

    Each request goes to the endpoint with the fewest requests in flight (ties: round robin) among those
    whose circuit breaker lets a call through; each endpoint has its own breaker, response format memory
    (per base URL and model), `max_in_flight` semaphore and private loop. A request that fails on one
    endpoint with no answer (connection refused or dropped, timeout, HTTP 5xx, 408 or 429) is tried once
    on another endpoint, within what is left of the request's deadline. When every breaker is open the
    request raises `NoEndpoint` at once (the core records the image `unscanned` with that reason).
    `own_circuits` tells the detector not to wrap the pool in a breaker of its own.
    """

    own_circuits = True

    def __init__(
        self,
        settings: Settings,
        spec: VerdictSpec,
        *,
        gate: Gate | bool | None = True,
        api_key: ApiKey | None = None,
    ) -> None:
        vision = vision_settings(settings)
        key = api_key or resolve_api_key(vision)
        if gate is True:
            gate = _gate_for(settings) if vision.gate_resource else None
        self.endpoints: list[Endpoint] = []
        for url in vision.base_urls:
            backend = OpenAIBackend(settings, spec, gate=gate or None, api_key=key, base_url=url)
            circuit = CircuitBreaker(vision.circuit_failures, vision.circuit_open_seconds)
            self.endpoints.append(Endpoint(backend.endpoint, backend, circuit))
        self.name = f"openai pool ({', '.join(e.url for e in self.endpoints)}) model {vision.model}"
        self.deadline = self.endpoints[0].backend.deadline
        self._lock = threading.Lock()
        self._turn = 0  # where the round robin among equally loaded endpoints starts next

    def judge(self, image: PreparedImage) -> Answer:
        started = time.monotonic()
        first = self._take()
        try:
            return self._attempt(first, image, self.deadline)
        except Exception as exc:
            left = self.deadline - (time.monotonic() - started)
            if not _fails_over(exc) or left < MIN_FAILOVER_SECONDS:
                raise
            failed = exc
        try:
            second = self._take(avoid=first)
        except NoEndpoint:
            raise failed from None
        log.info(
            "vision endpoint failed; trying another",
            failed=first.url,
            other=second.url,
            error=f"{type(failed).__name__}: {failed}",
        )
        return self._attempt(second, image, self.deadline - (time.monotonic() - started))

    def health(self) -> str | None:
        """A reason while any endpoint's breaker is not closed ("1 of 3 vision endpoints failing: ..."),
        else None."""
        failing = [e for e in self.endpoints if e.circuit.state != CLOSED]
        if not failing:
            return None
        share = f"{len(failing)} of {len(self.endpoints)} vision endpoints"
        if len(failing) == len(self.endpoints):
            share = "every vision endpoint"
        return f"{share} failing: " + "; ".join(_describe(e) for e in failing)

    def stats(self) -> list[dict[str, Any]]:
        """Per endpoint, in the configured order: `endpoint` (URL without credentials), `in_flight`,
        `requests` (attempts sent since start), `state` (closed, open, half_open), `failures`
        (consecutive)."""
        with self._lock:
            counts = [(e.in_flight, e.requests) for e in self.endpoints]
        return [
            {
                "endpoint": e.url,
                "in_flight": in_flight,
                "requests": requests,
                "state": e.circuit.state,
                "failures": e.circuit.consecutive_failures,
            }
            for e, (in_flight, requests) in zip(self.endpoints, counts, strict=True)
        ]

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.backend.close()

    # ------------------------------------------------------------------ internals

    def _take(self, avoid: Endpoint | None = None) -> Endpoint:
        """The least loaded endpoint whose breaker admits a call (its trial call, when half-open),
        counted in flight from now; NoEndpoint when none does."""
        count = len(self.endpoints)
        with self._lock:
            order = sorted(
                range(count), key=lambda i: (self.endpoints[i].in_flight, (i - self._turn) % count)
            )
            for index in order:
                endpoint = self.endpoints[index]
                if endpoint is avoid:
                    continue
                try:
                    endpoint.circuit.before_call()
                except CircuitOpen:
                    continue
                endpoint.in_flight += 1
                endpoint.requests += 1
                if avoid is None:  # a failover pick leaves the turn alone: the failed one is not first again
                    self._turn = (index + 1) % count
                return endpoint
        others = [e for e in self.endpoints if e is not avoid]
        reasons = "; ".join(_describe(e) for e in others)
        raise NoEndpoint(safe_text(f"every vision endpoint's circuit is open: {reasons}", limit=600))

    def _attempt(self, endpoint: Endpoint, image: PreparedImage, deadline: float) -> Answer:
        try:
            answer = endpoint.backend.judge(image, deadline)
        except Exception as exc:
            if endpoint_failure(exc):
                was = endpoint.circuit.state
                endpoint.circuit.record_failure(f"{type(exc).__name__}: {exc}")
                if was != OPEN and endpoint.circuit.state == OPEN:
                    log.warning("vision endpoint circuit open", endpoint=endpoint.url)
            else:
                endpoint.circuit.abandon()
            raise
        else:
            if endpoint.circuit.state != CLOSED:
                log.info("vision endpoint circuit closed: it answers again", endpoint=endpoint.url)
            endpoint.circuit.record_success()
            return answer
        finally:
            with self._lock:
                endpoint.in_flight -= 1


def _fails_over(exc: Exception) -> bool:
    """No answer from that endpoint (unreachable, timed out, 5xx, busy): another one may give one."""
    if isinstance(exc, EndpointStatusError):
        return exc.status >= 500 or exc.status in _FAILOVER_STATUSES
    return isinstance(exc, BackendError)


def _describe(endpoint: Endpoint) -> str:
    circuit = endpoint.circuit
    return f"{endpoint.url} ({circuit.state}, {circuit.consecutive_failures} failures): {circuit.last_error}"
