"""Circuit breaker for the vision backend: fail fast while the endpoint keeps failing, then try again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import structlog

log = structlog.get_logger("dropwarden.vision")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_T = TypeVar("_T")


class CircuitOpen(Exception):
    """Raised instead of calling the backend while the circuit is open ("circuit open: <last error>")."""


class CircuitBreaker:
    """After `failures` consecutive failures the circuit opens for `open_seconds`: calls fail fast. Then
    it is half-open: one trial call goes through (others still fail fast); success closes it, failure
    opens it again. Thread-safe. `state`, `last_error` and `opened_at` are for health reporting."""

    def __init__(
        self, failures: int, open_seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1 or open_seconds <= 0:
            raise ValueError("failures must be >= 1 and open_seconds > 0")
        self.failures_to_open = failures
        self.open_seconds = open_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial = False
        self.last_error: str | None = None

    @property
    def state(self) -> str:
        """ "closed", "open", or "half_open" (open time elapsed: the next call is a trial, or is one)."""
        with self._lock:
            if self._state == OPEN and self._clock() >= self._opened_at + self.open_seconds:
                return HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    def call(self, fn: Callable[[], _T], counts: Callable[[Exception], bool] = lambda exc: True) -> _T:
        """Run `fn` through the breaker. An exception for which `counts` is false (a rejected image, a
        busy local gate) says nothing about the endpoint: it neither opens nor closes the circuit."""
        self.before_call()
        try:
            result = fn()
        except Exception as exc:
            if counts(exc):
                self.record_failure(f"{type(exc).__name__}: {exc}")
            else:
                self.abandon()
            raise
        self.record_success()
        return result

    def before_call(self) -> None:
        with self._lock:
            if self._state == CLOSED:
                return
            if self._state == OPEN:
                if self._clock() < self._opened_at + self.open_seconds:
                    raise CircuitOpen(f"circuit open: {self.last_error}")
                self._state, self._trial = HALF_OPEN, True
                return
            if self._trial:
                raise CircuitOpen(f"circuit open: {self.last_error} (a trial call is in progress)")
            self._trial = True

    def record_success(self) -> None:
        with self._lock:
            was = self._state
            self._state, self._failures, self._trial = CLOSED, 0, False
        if was != CLOSED:
            log.info("vision circuit closed: the backend answers again")

    def record_failure(self, reason: str) -> None:
        with self._lock:
            self._failures += 1
            self.last_error = reason
            opening = self._state == HALF_OPEN or (
                self._state == CLOSED and self._failures >= self.failures_to_open
            )
            if opening:
                self._state, self._opened_at, self._trial = OPEN, self._clock(), False
        if opening:
            log.warning(
                "vision circuit open: failing fast",
                seconds=self.open_seconds,
                failures=self._failures,
                error=reason,
            )

    def abandon(self) -> None:
        """A trial call ended without telling anything about the backend: let the next call try."""
        with self._lock:
            self._trial = False

    def health(self) -> str | None:
        """A reason while the circuit is not closed, else None."""
        state = self.state
        if state == CLOSED:
            return None
        if state == HALF_OPEN:
            return f"vision backend failing, retrying: {self.last_error}"
        return f"vision backend failing (circuit open for {self.open_seconds:g}s): {self.last_error}"
