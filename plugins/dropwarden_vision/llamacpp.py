"""The embedded vision backend: a LLaVA-class GGUF model and its mmproj run in-process by llama.cpp.

One model per backend, loaded lazily and once (thread-safe); inference is serialized (a llama.cpp context
is not thread-safe) and passes the GPU gate; the answer is constrained to the verdict JSON schema by a
grammar (`response_format={"type": "json_object", "schema": ...}`, llama-cpp-python's form of it).
Needs the `llamacpp` extra; importing this module without it raises ImportError, which
`backend.create_backend` turns into a SettingError naming `vision.backend`.
"""

from __future__ import annotations

import ctypes
import inspect
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

# isort: split
import dropwarden_vision.cxx_runtime  # noqa: F401  (before llama_cpp: see its docstring)

# isort: split
import llama_cpp
from llama_cpp import llama_chat_format, mtmd_cpp

from dropwarden.config import SettingError
from dropwarden.gate import GateError, GateTimeout, check_gpu_memory, get_gate
from dropwarden_vision.backend_types import MAX_TOKENS, BackendError, GateBusy, chat_messages, safe_text
from dropwarden_vision.settings import vision_settings

if TYPE_CHECKING:
    from dropwarden.config import Settings
    from dropwarden.gate import Held
    from dropwarden_vision.images import PreparedImage
    from dropwarden_vision.schema import Answer, VerdictSpec

log = structlog.get_logger("dropwarden.vision")

# `vision.chat_handler` names: the same as `python -m llama_cpp.server --chat_format NAME`, so one name
# works for both backends. Classes are looked up when the backend is built, so a llama-cpp-python without
# one of them only refuses that name. All of them are in llama-cpp-python 0.3.36.
CHAT_HANDLERS = {
    "llava-1-5": "Llava15ChatHandler",
    "llava-1-6": "Llava16ChatHandler",
    "obsidian": "ObsidianChatHandler",
    "moondream": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler",
    "llama-3-vision-alpha": "Llama3VisionAlphaChatHandler",
    "minicpm-v-2.6": "MiniCPMv26ChatHandler",
    "qwen2.5-vl": "Qwen25VLChatHandler",
    "gemma4": "Gemma4ChatHandler",
    "mtmd": "MTMDChatHandler",  # generic: the chat template from the model's GGUF metadata
}
_ALIASES = {
    "llava15": "llava-1-5",
    "llava-1.5": "llava-1-5",
    "llava16": "llava-1-6",
    "llava-1.6": "llava-1-6",
    "llama3-vision-alpha": "llama-3-vision-alpha",
    "minicpmv26": "minicpm-v-2.6",
    "minicpm-v-26": "minicpm-v-2.6",
    "qwen25vl": "qwen2.5-vl",
    "qwen2.5vl": "qwen2.5-vl",
}


def resolve_chat_handler(name: str) -> tuple[str, type]:
    """The canonical name and the llama-cpp-python class for a `vision.chat_handler` value."""
    canonical = _ALIASES.get(name.strip().lower(), name.strip().lower())
    class_name = CHAT_HANDLERS.get(canonical)
    handler = getattr(llama_chat_format, class_name, None) if class_name else None
    if handler is None:
        known = ", ".join(n for n, c in CHAT_HANDLERS.items() if hasattr(llama_chat_format, c))
        raise SettingError(
            ("vision", "chat_handler"),
            f"unknown chat handler {name!r} for llama-cpp-python {llama_cpp.__version__} (known: {known})",
        )
    return canonical, handler


class LlamaCppBackend:
    """`VisionBackend` over an embedded llama.cpp model (see `dropwarden_vision.backend`)."""

    def __init__(self, settings: Settings, spec: VerdictSpec):
        vision = vision_settings(settings)
        self._model_path = _model_file(vision.model_path, "model_path")
        self._mmproj_path = _model_file(vision.mmproj_path, "mmproj_path")
        self.chat_handler, self._handler_class = resolve_chat_handler(vision.chat_handler)
        if vision.gpu_resource not in settings.gpu.resources:
            raise SettingError(
                ("vision", "gpu_resource"),
                f"no GPU gate resource {vision.gpu_resource!r} in [gpu] resources"
                f" (have: {sorted(settings.gpu.resources)})",
            )
        self.name = f"llama-cpp {self._model_path.name} ({self.chat_handler})"
        self._spec = spec
        self._n_gpu_layers = vision.n_gpu_layers
        self._n_ctx = vision.n_ctx
        self._n_threads = vision.n_threads
        self._timeout = vision.timeout
        self._resource = vision.gpu_resource
        self._min_free_mib = settings.gpu.min_free_memory_mib
        self._gate = get_gate(settings.gpu)
        self._lock = threading.Lock()  # one load, one inference at a time
        self._llama: llama_cpp.Llama | None = None
        self._closed = False
        self.loads = 0  # how many times a model was loaded (once, unless a load failed)
        self.load_seconds: float | None = None
        # (layers on the GPU, layers in all) as llama.cpp reported at the load; None: a build without one
        self.offloaded_layers: tuple[int, int] | None = None

    # VisionBackend

    def judge(self, image: PreparedImage) -> Answer:
        """Blocking; call it from a worker thread (async callers: `await asyncio.to_thread(...)`).

        Waits at most `vision.timeout` for this backend's lock and the GPU gate together; generation is
        bounded by `MAX_TOKENS` and cannot be interrupted once started.
        """
        deadline = time.monotonic() + self._timeout
        messages = chat_messages(image, self._spec.prompt)
        with self._locked(deadline), self._gate_slot(deadline):
            llama = self._ensure_loaded()
            text = self._complete(llama, messages)
        return self._spec.parse(text)

    def load(self) -> None:
        """Load now rather than on the first image (e.g. at startup); idempotent and thread-safe."""
        deadline = time.monotonic() + self._timeout
        with self._locked(deadline), self._gate_slot(deadline):
            self._ensure_loaded()

    def close(self) -> None:
        """Free the model and the mmproj context; idempotent. Later calls to `judge` raise BackendError."""
        with self._lock:
            self._closed = True
            llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()

    # internals

    def _locked(self, deadline: float) -> _Locked:
        return _Locked(self._lock, deadline, self.name)

    def _gate_slot(self, deadline: float) -> Held:
        # Held even with n_gpu_layers == 0: LLaVA-style handlers put the vision tower on the GPU whenever
        # llama.cpp was built with one (their mtmd context is created with use_gpu=True).
        try:
            return self._gate.acquire(self._resource, 1, max(0.0, deadline - time.monotonic()))
        except GateTimeout as exc:
            raise GateBusy(str(exc)) from None
        except GateError as exc:
            raise GateBusy(f"GPU gate unusable: {exc}") from None

    def _ensure_loaded(self) -> llama_cpp.Llama:
        """Called with the lock and a gate slot held."""
        if self._closed:
            raise BackendError(f"{self.name}: closed")
        if self._llama is not None:
            return self._llama
        if self._n_gpu_layers != 0:
            reason = check_gpu_memory(self._min_free_mib)
            if reason is not None:
                raise BackendError(f"{self.name}: not loading the model: {reason}")
        # A large model takes seconds to minutes to load (mmap + upload to the GPU). When this happens at
        # startup, the daemon extends its systemd start timeout around `load()` (EXTEND_TIMEOUT_USEC);
        # that is the caller's job, not this module's.
        _route_llama_logs()
        _log_lines.offloaded = None
        started = time.monotonic()
        try:
            handler = self._handler_class(**self._handler_kwargs())
            llama = llama_cpp.Llama(
                model_path=str(self._model_path),
                chat_handler=handler,
                n_ctx=self._n_ctx,
                n_gpu_layers=self._n_gpu_layers,
                n_threads=self._n_threads,
                # verbose=False silences llama.cpp; note that llama-cpp-python does it by pointing the
                # process's fds 1 and 2 at /dev/null around the load and each image (other threads'
                # console output in that window is lost; journald-native logging is unaffected).
                verbose=False,
            )
            # The handler loads the mmproj (and warms the vision tower up) on its first image; do it now,
            # so that load time and a broken mmproj show up here rather than at the first file.
            init = getattr(handler, "_init_mtmd_context", None)
            if callable(init):
                try:
                    init(llama)
                except BaseException:
                    llama.close()
                    raise
        except Exception as exc:  # ValueError from llama-cpp-python; nothing else is documented
            raise BackendError(f"{self.name}: cannot load the model: {_short(exc)}") from None
        self.load_seconds = time.monotonic() - started
        self.offloaded_layers = _log_lines.offloaded
        self.loads += 1
        self._llama = llama
        layers = "{}/{}".format(*self.offloaded_layers) if self.offloaded_layers else "none (CPU build)"
        log.info(
            "vision model loaded",
            backend=self.name,
            seconds=round(self.load_seconds, 3),
            gpu_layers=layers,
        )
        return llama

    def _handler_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"clip_model_path": str(self._mmproj_path), "verbose": False}
        if "use_gpu" in inspect.signature(self._handler_class.__init__).parameters:
            kwargs["use_gpu"] = self._n_gpu_layers != 0
        return kwargs

    def _complete(self, llama: llama_cpp.Llama, messages: list[dict[str, Any]]) -> str | None:
        try:
            response = llama.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                response_format={"type": "json_object", "schema": self._spec.schema},
                temperature=0.0,
                max_tokens=MAX_TOKENS,
            )
        except Exception as exc:  # ValueError ("Prompt exceeds n_ctx", bad image), RuntimeError (decode)
            raise BackendError(f"{self.name}: inference failed: {_short(exc)}") from None
        try:
            return response["choices"][0]["message"]["content"]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.name}: answer without a message") from None


class _Locked:
    """`with` a lock taken before a deadline, else GateBusy: another image holds the model too long."""

    def __init__(self, lock: threading.Lock, deadline: float, name: str):
        self._lock, self._deadline, self._name = lock, deadline, name

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=max(0.0, self._deadline - time.monotonic())):
            raise GateBusy(f"{self._name}: busy with another image past vision.timeout")

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


# ggml log levels (ggml.h): DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous message)
_GGML_WARN, _GGML_ERROR, _GGML_CONT = 3, 4, 5
_OFFLOADED = re.compile(rb"offloaded (\d+)/(\d+) layers to GPU")
_log_routed = False
_log_route_lock = threading.Lock()
# Per thread: llama.cpp logs a model load in the thread that loads it, so a load reads its own lines.
_log_lines = threading.local()


def _forward(source: str, level: int, text: bytes) -> None:
    """Warnings and errors to our log, the rest dropped (INFO lines echo prompts and dump metadata)."""
    last = getattr(_log_lines, "levels", None)
    if last is None:
        last = _log_lines.levels = {}
    if level != _GGML_CONT:
        last[source] = level
    level = last.get(source, 0)
    if level in (_GGML_WARN, _GGML_ERROR):
        message = text.decode("utf-8", "replace").strip()
        if message:
            (log.error if level == _GGML_ERROR else log.warning)(source, message=message[:500])


@llama_cpp.llama_log_callback
def _mtmd_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """mtmd/clip's log, which otherwise goes to stderr at every image."""
    _forward("llama.cpp mtmd", level, text)


@llama_cpp.llama_log_callback
def _llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp's and ggml's log; notes how many layers a load put on the GPU."""
    found = _OFFLOADED.search(text)
    if found:
        _log_lines.offloaded = (int(found[1]), int(found[2]))
    _forward("llama.cpp", level, text)


def _route_llama_logs() -> None:
    """Process-wide, once: llama.cpp's, ggml's and mtmd's logs through our callbacks."""
    global _log_routed
    with _log_route_lock:
        if not _log_routed:
            llama_cpp.llama_log_set(_llama_log, ctypes.c_void_p(0))  # also ggml_log_set
            mtmd_cpp.mtmd_helper_log_set(_mtmd_log, ctypes.c_void_p(0))  # also mtmd_log_set
            _log_routed = True


def _model_file(path: Path | None, key: str) -> Path:
    if path is None:
        raise SettingError(("vision", key), "required for the llama-cpp backend (a GGUF file)")
    if not path.is_file():
        raise SettingError(("vision", key), f"{path} is not a readable file")
    return path


def _short(exc: BaseException) -> str:
    # Errors from llama.cpp name paths and sizes, never the image or the answer; still one short line.
    return safe_text(f"{type(exc).__name__}: {exc}")
