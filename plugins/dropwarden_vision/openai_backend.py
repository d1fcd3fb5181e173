"""The OpenAI-compatible backend: async client on a private event loop, response-format probing, limits."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import openai
import structlog

from dropwarden.config import SettingError
from dropwarden_vision.backend_types import (
    MAX_TOKENS,
    BackendError,
    GateBusy,
    chat_messages,
    plugin_options,
    safe_text,
)
from dropwarden_vision.settings import vision_settings

if TYPE_CHECKING:
    from dropwarden.config import Settings
    from dropwarden.gate import Gate
    from dropwarden_vision.images import PreparedImage
    from dropwarden_vision.schema import Answer, VerdictSpec
    from dropwarden_vision.settings import VisionSettings

log = structlog.get_logger("dropwarden.vision")

PLACEHOLDER_KEY = "sk-no-key"
FORMATS = ("json_schema", "json_object", "prompt")
_T = TypeVar("_T")
# A 4xx/5xx whose message says this is about the requested structured output, not anything else.
_FORMAT_COMPLAINT = re.compile(
    r"response_format|json_schema|json_object|schema|grammar|guided|validation", re.I
)
_NOT_FORMAT_STATUSES = frozenset({401, 402, 403, 404, 408, 409, 429})

# Response format that worked, per (base URL, model), for the life of the process.
_formats: dict[tuple[str, str], str] = {}
_formats_lock = threading.Lock()


def remembered_format(base_url: str, model: str) -> str | None:
    with _formats_lock:
        return _formats.get((base_url.rstrip("/"), model))


def forget_formats() -> None:
    """Forget every probed response format (tests; an operator swapping the server behind a URL)."""
    with _formats_lock:
        _formats.clear()


def _remember(base_url: str, model: str, mode: str) -> None:
    with _formats_lock:
        _formats[(base_url.rstrip("/"), model)] = mode


@dataclass(frozen=True)
class ApiKey:
    """The key and where it came from. `repr` and `str` never show the key."""

    value: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return self.source


def resolve_api_key(vision: VisionSettings, environ: dict[str, str] | None = None) -> ApiKey:
    """`vision.api_key_file` when set (first line, stripped), else `$<vision.api_key_env>`, else a
    placeholder (local servers want some bearer token). An unreadable or empty file is a SettingError."""
    environ = os.environ if environ is None else environ
    if vision.api_key_file is not None:
        path = vision.api_key_file
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise SettingError(("vision", "api_key_file"), f"cannot read {path}: {reason}") from None
        key = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not key:
            raise SettingError(("vision", "api_key_file"), f"{path} is empty")
        return ApiKey(key, f"file {path}")
    key = environ.get(vision.api_key_env, "").strip()
    if key:
        return ApiKey(key, f"${vision.api_key_env}")
    return ApiKey(PLACEHOLDER_KEY, "none configured (placeholder sent)")


def display_url(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class EndpointStatusError(BackendError):
    """The endpoint answered an HTTP error status; `status` and `detail` (what it said, made safe)."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


@dataclass
class ProbeResult:
    """What `probe()` found: the accepted format, the ones rejected (with why), the answer or its error."""

    mode: str | None
    rejected: list[str]
    answer: Answer | None = None
    error: Exception | None = None
    seconds: float = 0.0


class _LoopThread:
    """A private asyncio loop in a daemon thread: the async client lives and is used only there."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout: float = 2.0) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


class OpenAIBackend:
    """Chat completions with the image as a data URL, through `openai.AsyncOpenAI`.

    Requests pass an asyncio semaphore (`vision.max_in_flight`) and the GPU gate (`vision.gate_resource`,
    weight 1; "" means no gate). With `response_format = "auto"` the first request to an endpoint probes
    json_schema, then json_object with the schema, then the prompt alone; the accepted one is remembered
    for the process. `judge` is synchronous and bounded by `deadline` seconds.
    """

    def __init__(
        self,
        settings: Settings,
        spec: VerdictSpec,
        *,
        gate: Gate | bool | None = True,
        api_key: ApiKey | None = None,
        base_url: str | None = None,
    ) -> None:
        vision = vision_settings(settings)
        self.vision = vision
        self.spec = spec
        # `base_url`: one endpoint of a pool (`[vision] base_url` a list); default the first configured
        self.base_url = (base_url or vision.base_urls[0]).rstrip("/")
        self.endpoint = display_url(self.base_url)
        self.name = f"openai {self.endpoint} model {vision.model}"
        self.api_key = api_key or resolve_api_key(vision)
        self.image_marker = plugin_options(settings)["image_marker"]
        if gate is True:
            gate = _gate_for(settings) if vision.gate_resource else None
        self.gate: Gate | None = gate or None
        self.deadline = _deadline(vision, settings.limits.detector_timeout)
        self._lock = threading.Lock()
        self._runner: _LoopThread | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._probe_lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------ synchronous API

    def judge(self, image: PreparedImage, deadline: float | None = None) -> Answer:
        """`deadline`: seconds left to the caller (an endpoint pool), when shorter than our own."""
        return self._run(self._judge(image), deadline)

    def probe(self, image: PreparedImage) -> ProbeResult:
        """For `dropwarden doctor`: which response format the server accepts (the configured one when
        not "auto"), and whether an image round trip gives a valid verdict. Remembers nothing."""
        return self._run(self._probe_report(image))

    def list_models(self) -> list[str]:
        return self._run(self._list_models())

    def close(self) -> None:
        with self._lock:
            runner, self._runner = self._runner, None
        if runner is None:
            return
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                runner.submit(client.close()).result(timeout=2)
        runner.stop()
        self._semaphore = self._probe_lock = None  # bound to the stopped loop

    def _run(self, coro: Coroutine[Any, Any, _T], deadline: float | None = None) -> _T:
        limit = self.deadline if deadline is None else max(0.01, min(deadline, self.deadline))
        future = self._loop().submit(coro)
        try:
            return future.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BackendError(f"no answer from {self.endpoint} within {limit:g}s") from None

    def _loop(self) -> _LoopThread:
        with self._lock:
            if self._runner is None:
                self._runner = _LoopThread(f"vision-{self.endpoint}")
            return self._runner

    # ------------------------------------------------------------------ on the private loop

    async def _judge(self, image: PreparedImage) -> Answer:
        async with self._limits():
            mode = self._configured_mode()
            if mode is None:
                assert self._probe_lock is not None
                async with self._probe_lock:
                    mode = self._configured_mode()
                    if mode is None:
                        mode, text, _ = await self._probe(image, FORMATS)
                        _remember(self.base_url, self.vision.model, mode)
                        log.info("vision response format chosen", endpoint=self.endpoint, mode=mode)
                        return self.spec.parse(text)
            return self.spec.parse(await self._ask(image, mode, self._get_client()))

    async def _probe_report(self, image: PreparedImage) -> ProbeResult:
        wanted = FORMATS if self.vision.response_format == "auto" else (self.vision.response_format,)
        started = time.monotonic()
        try:
            mode, text, rejected = await self._probe(image, wanted)
        except _AllRejected as exc:
            return ProbeResult(None, exc.rejected, seconds=time.monotonic() - started)
        except Exception as exc:
            return ProbeResult(None, [], error=exc, seconds=time.monotonic() - started)
        result = ProbeResult(mode, rejected, seconds=time.monotonic() - started)
        try:
            result.answer = self.spec.parse(text)
        except Exception as exc:
            result.error = exc
        return result

    async def _list_models(self) -> list[str]:
        client = self._get_client().with_options(max_retries=0)
        try:
            page = await client.models.list()
        except openai.APIError as exc:
            raise self._error(exc) from None
        return [str(getattr(model, "id", "")) for model in page.data or []]

    def _configured_mode(self) -> str | None:
        if self.vision.response_format != "auto":
            return self.vision.response_format
        return remembered_format(self.base_url, self.vision.model)

    async def _probe(self, image: PreparedImage, modes: tuple[str, ...]) -> tuple[str, str | None, list[str]]:
        """Try each format in turn (no retries: a rejection is an answer); the first accepted wins."""
        client = self._get_client().with_options(max_retries=0)
        rejected: list[str] = []
        for index, mode in enumerate(modes):
            try:
                text = await self._ask(image, mode, client)
            except EndpointStatusError as exc:
                last = index == len(modes) - 1
                if mode != "prompt" and _rejects_format(exc):
                    rejected.append(f"{mode}: HTTP {exc.status} {exc.detail}")
                    if last:
                        raise _AllRejected(rejected) from None
                    continue
                raise
            return mode, text, rejected
        raise _AllRejected(rejected)

    @contextlib.asynccontextmanager
    async def _limits(self) -> AsyncIterator[None]:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.vision.max_in_flight)
            self._probe_lock = asyncio.Lock()
        async with self._semaphore:
            if self.gate is None:
                yield
                return
            from dropwarden.gate import GateError

            resource, wait = self.vision.gate_resource, self.vision.timeout
            try:
                held = await self.gate.acquire_async(resource, 1, wait)
            except GateError as exc:
                raise GateBusy(f"GPU gate: {exc}") from None
            try:
                yield
            finally:
                held.release()

    def _get_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key.value,
                timeout=self.vision.timeout,
                max_retries=self.vision.retries,
            )
        return self._client

    async def _ask(self, image: PreparedImage, mode: str, client: openai.AsyncOpenAI) -> str | None:
        """One chat completion; returns the answer text (None or "" when the model said nothing)."""
        request: dict[str, Any] = {
            "model": self.vision.model,
            "messages": chat_messages(image, self.spec.prompt, self.image_marker),
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
        }
        if mode == "json_schema":
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "dropwarden_verdict", "schema": self.spec.schema, "strict": True},
            }
        elif mode == "json_object":
            request["response_format"] = {"type": "json_object", "schema": self.spec.schema}
        try:
            completion = await client.chat.completions.create(**request)
        except openai.APIError as exc:
            raise self._error(exc) from None
        except Exception as exc:  # a body the client could not decode as a completion
            raise BackendError(f"invalid response from {self.endpoint}: {type(exc).__name__}") from None
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list):
            raise BackendError(f"invalid response from {self.endpoint}: not a chat completion")
        if not choices:
            from dropwarden_vision.schema import MalformedAnswer

            raise MalformedAnswer("the answer has no choices")
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        return content if isinstance(content, str) else None

    def _error(self, exc: openai.APIError) -> BackendError:
        secrets = (self.api_key.value,)
        retries = f" after {self.vision.retries} retries" if self.vision.retries else ""
        if isinstance(exc, openai.APITimeoutError):
            return BackendError(f"no answer from {self.endpoint} within {self.vision.timeout:g}s{retries}")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            why = safe_text(f"{type(cause).__name__}: {cause}" if cause else str(exc), secrets, 160)
            return BackendError(f"cannot reach {self.endpoint}{retries}: {why}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = safe_text(_error_detail(exc), secrets)
            if status == 429:
                return EndpointStatusError(
                    f"{self.endpoint} is rate-limiting (HTTP 429){retries}: {detail}", status, detail
                )
            return EndpointStatusError(f"{self.endpoint} answered HTTP {status}: {detail}", status, detail)
        return BackendError(f"invalid response from {self.endpoint}: {safe_text(str(exc), secrets, 120)}")


class _AllRejected(BackendError):
    def __init__(self, rejected: list[str]) -> None:
        super().__init__("the server rejected every response format: " + "; ".join(rejected))
        self.rejected = rejected


def _rejects_format(exc: EndpointStatusError) -> bool:
    return (
        exc.status >= 400
        and exc.status not in _NOT_FORMAT_STATUSES
        and bool(_FORMAT_COMPLAINT.search(exc.detail))
    )


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            message = inner.get("message") or inner.get("detail") or inner
            return str(message)
        return str(inner if inner is not None else body.get("detail", body))
    if body is not None:
        return str(body)
    try:
        return exc.response.text
    except Exception:
        return exc.message


def _gate_for(settings: Settings) -> Gate:
    from dropwarden.gate import get_gate

    return get_gate(settings.gpu)


def _deadline(vision: VisionSettings, detector_timeout: float) -> float:
    """Upper bound for one `judge`: gate wait, then every attempt of a request (a probe adds two more)
    with the client's back-off between them; kept just under the core's detector timeout so that a
    late request is cancelled here rather than left running after the core gave up."""
    backoff = sum(min(8.0, 0.5 * 2**i) for i in range(vision.retries))
    full = (
        vision.timeout * (vision.retries + 3) + backoff + (vision.timeout if vision.gate_resource else 0) + 1
    )
    cap = detector_timeout - min(1.0, detector_timeout / 10)
    return max(0.1, min(full, cap))
