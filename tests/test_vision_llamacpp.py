"""The llama.cpp vision paths with a real (tiny, random) LLaVA-1.5 model: the embedded `llama-cpp` backend,
and `python -m llama_cpp.server` as an OpenAI-compatible endpoint for the `openai` backend."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from dropwarden.config import GpuSettings, SettingError, Settings
from dropwarden_vision.settings import VisionSettings

from .conftest import require
from .tiny_llava import write_tiny_llava

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
HAVE_GGUF = importlib.util.find_spec("gguf") is not None
SERVER_START_TIMEOUT = 90.0


def _require_llama_cpp() -> None:
    require(HAVE_LLAMA_CPP, "llama-cpp-python (the `llamacpp` extra)")
    require(HAVE_GGUF, "gguf (the `llamacpp` extra)")


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model pair, written once per test session; a GPU build that cannot load it fails here."""
    _require_llama_cpp()
    pair = write_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))
    problem = _gpu_build_load_problem(pair[0])
    if problem:
        pytest.fail(problem)
    return pair


def _gpu_build_load_problem(model: Path) -> str | None:
    """A CUDA build of llama-cpp-python exports copies of libstdc++'s template code from libggml-cuda and
    crashes (SIGSEGV in llama_model::print_info) loading a model in a process that loaded libstdc++ first
    (numpy does) unless `dropwarden_vision.cxx_runtime` made libstdc++ global before. Tried in a child, as
    the backend loads llama.cpp, so that the suite says so instead of dying in its first model load."""
    from dropwarden_vision.llamacpp import llama_cpp  # our import: libstdc++ made global first

    if not llama_cpp.llama_supports_gpu_offload():
        return None
    code = (
        "import sys, numpy, dropwarden_vision.llamacpp as b;"
        " b.llama_cpp.Llama(sys.argv[1], n_ctx=256, n_gpu_layers=-1, verbose=False)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, timeout=120)
    if done.returncode == 0:
        return None
    return (
        f"this GPU build of llama-cpp-python cannot load a model after numpy (exit {done.returncode}):"
        f" see dropwarden_vision/cxx_runtime.py\n{done.stderr.decode(errors='replace')[-1500:]}"
    )


def _settings(
    tmp_path: Path, model: Path, mmproj: Path | None, gpu: dict | None = None, **vision: object
) -> Settings:
    fields = {
        "enabled": True,
        "backend": "llama-cpp",
        "model_path": model,
        "mmproj_path": mmproj,
        "n_ctx": 4096,
        "n_threads": 2,
        "timeout": 60.0,
        # a GPU host with a CUDA build of llama-cpp-python runs these tests offloaded with -1
        "n_gpu_layers": int(os.environ.get("DROPWARDEN_TEST_N_GPU_LAYERS", "0")),
        **vision,
    }
    return Settings(
        vision=VisionSettings(**fields),
        gpu=GpuSettings(
            lock_dir=tmp_path / "gate", resources={"gpu0": 1, "vision-endpoint": 4}, **(gpu or {})
        ),
    )


def _png(seed: int = 0) -> bytes:
    image = Image.new("RGB", (96, 64), (240, 240, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((8 + seed, 8, 60, 40), outline=(20, 20, 160), width=3)
    draw.text((10, 44), "ID 1234", fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _prepared(seed: int = 0):
    from dropwarden_vision.images import ImageLimits, prepare_image

    return prepare_image(_png(seed), ImageLimits())


def _spec(settings: Settings):
    from dropwarden_vision.schema import VerdictSpec

    return VerdictSpec.from_settings(settings.vision)


def _assert_schema_valid(obj: object, schema: dict) -> None:
    """The verdict schema's constraints, checked by hand (no jsonschema dependency)."""
    assert isinstance(obj, dict)
    assert set(obj) == set(schema["required"])  # additionalProperties: false
    props = schema["properties"]
    assert isinstance(obj["contains_sensitive"], bool)
    assert isinstance(obj["categories"], list)
    assert all(item in props["categories"]["items"]["enum"] for item in obj["categories"])
    assert isinstance(obj["confidence"], int | float) and not isinstance(obj["confidence"], bool)
    assert isinstance(obj["description"], str)
    assert len(obj["description"]) <= props["description"]["maxLength"]


def _assert_answer(answer) -> None:
    from dropwarden_vision.schema import Answer

    assert isinstance(answer, Answer)
    assert isinstance(answer.contains_sensitive, bool)
    assert isinstance(answer.categories, tuple) and all(isinstance(c, str) for c in answer.categories)
    assert isinstance(answer.confidence, float) and 0.0 <= answer.confidence <= 1.0
    assert isinstance(answer.description, str)


# ---------------------------------------------------------------------------------------------- the model


def test_tiny_model_files(tiny_llava: tuple[Path, Path]) -> None:
    import gguf

    model, mmproj = tiny_llava
    assert model.stat().st_size < 1_000_000 and mmproj.stat().st_size < 300_000
    reader = gguf.GGUFReader(str(mmproj))
    names = {t.name for t in reader.tensors}
    assert {"v.patch_embd.weight", "v.class_embd", "mm.0.weight", "mm.2.weight"} <= names
    assert {f"v.blk.1.{n}.weight" for n in ("attn_q", "attn_k", "attn_v", "attn_out", "ffn_up")} <= names
    assert bytes(reader.fields["clip.projector_type"].parts[-1]) == b"mlp"


def test_tiny_model_answers_schema_constrained_json(tiny_llava: tuple[Path, Path], tmp_path: Path) -> None:
    """llama-cpp-python itself: Llava15ChatHandler + Llama, an image, json_object with the schema."""
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Llava15ChatHandler

    from dropwarden_vision.backend import chat_messages

    model, mmproj = tiny_llava
    spec = _spec(_settings(tmp_path, model, mmproj))
    llama = Llama(
        model_path=str(model),
        chat_handler=Llava15ChatHandler(clip_model_path=str(mmproj), verbose=False),
        n_ctx=4096,
        n_threads=2,
        verbose=False,
    )
    try:
        response = llama.create_chat_completion(
            messages=chat_messages(_prepared(), spec.prompt),
            response_format={"type": "json_object", "schema": spec.schema},
            temperature=0.0,
            max_tokens=300,
        )
    finally:
        llama.close()
    text = response["choices"][0]["message"]["content"]
    _assert_schema_valid(json.loads(text), spec.schema)
    assert response["choices"][0]["finish_reason"] == "stop"
    # the image went through the projector: its 16 patch embeddings sit in the prompt
    assert response["usage"]["prompt_tokens"] > 16


# ---------------------------------------------------------------------------------------------- embedded


def test_llamacpp_backend_judges_an_image_and_loads_once(
    tiny_llava: tuple[Path, Path], tmp_path: Path
) -> None:
    from dropwarden_vision.backend import VisionBackend, create_backend
    from dropwarden_vision.llamacpp import LlamaCppBackend

    settings = _settings(tmp_path, *tiny_llava)
    backend = create_backend(settings, _spec(settings))
    assert isinstance(backend, LlamaCppBackend) and isinstance(backend, VisionBackend)
    assert backend.name.startswith("llama-cpp ") and "llava-1-5" in backend.name
    assert backend.loads == 0  # lazy: nothing loaded until the first image
    try:
        first = backend.judge(_prepared(0))
        second = backend.judge(_prepared(5))
        _assert_answer(first)
        _assert_answer(second)
        assert backend.loads == 1
        assert backend.load_seconds is not None
        # llama.cpp's own count of the layers it put on a GPU; a CPU build has none to report
        import llama_cpp

        assert (backend.offloaded_layers is None) == (not llama_cpp.llama_supports_gpu_offload())
        # the gate slot was given back after each image
        from dropwarden.gate import get_gate

        assert get_gate(settings.gpu).stats()["gpu0"]["in_flight"] == 0
    finally:
        backend.close()
        backend.close()  # idempotent
    from dropwarden_vision.backend import BackendError

    with pytest.raises(BackendError, match="closed"):
        backend.judge(_prepared())


def test_llamacpp_backend_concurrent_callers_share_one_model(
    tiny_llava: tuple[Path, Path], tmp_path: Path
) -> None:
    from dropwarden_vision.llamacpp import LlamaCppBackend

    settings = _settings(tmp_path, *tiny_llava)
    backend = LlamaCppBackend(settings, _spec(settings))
    answers: list[object] = []
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            answers.append(backend.judge(_prepared(seed)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert len(answers) == 4
        for answer in answers:
            _assert_answer(answer)
        assert backend.loads == 1
    finally:
        backend.close()


def test_llamacpp_backend_busy_gate_is_gate_busy(tiny_llava: tuple[Path, Path], tmp_path: Path) -> None:
    from dropwarden.gate import get_gate
    from dropwarden_vision.backend import GateBusy
    from dropwarden_vision.llamacpp import LlamaCppBackend

    settings = _settings(tmp_path, *tiny_llava, timeout=0.3)
    backend = LlamaCppBackend(settings, _spec(settings))
    try:
        with get_gate(settings.gpu).hold("gpu0"), pytest.raises(GateBusy):
            backend.judge(_prepared())
        assert backend.loads == 0
    finally:
        backend.close()


def test_llamacpp_backend_refuses_to_load_without_gpu_memory(
    tiny_llava: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dropwarden.gate
    from dropwarden_vision.backend import BackendError
    from dropwarden_vision.llamacpp import LlamaCppBackend

    monkeypatch.setattr(dropwarden.gate, "free_gpu_memory_mib", lambda device_index=0: 100)
    settings = _settings(tmp_path, *tiny_llava, gpu={"min_free_memory_mib": 4096}, n_gpu_layers=-1)
    backend = LlamaCppBackend(settings, _spec(settings))
    try:
        with pytest.raises(BackendError, match="100 MiB free; 4096 MiB required"):
            backend.judge(_prepared())
        assert backend.loads == 0
    finally:
        backend.close()


def test_llamacpp_backend_configuration_errors(tiny_llava: tuple[Path, Path], tmp_path: Path) -> None:
    from dropwarden_vision.llamacpp import CHAT_HANDLERS, LlamaCppBackend, resolve_chat_handler

    model, mmproj = tiny_llava
    spec = _spec(_settings(tmp_path, model, mmproj))
    with pytest.raises(SettingError) as missing:
        LlamaCppBackend(_settings(tmp_path, model, None), spec)
    assert missing.value.loc == ("vision", "mmproj_path")
    with pytest.raises(SettingError) as absent:
        LlamaCppBackend(_settings(tmp_path, tmp_path / "nope.gguf", mmproj), spec)
    assert absent.value.loc == ("vision", "model_path")
    with pytest.raises(SettingError) as unknown:
        LlamaCppBackend(_settings(tmp_path, model, mmproj, chat_handler="llava-9"), spec)
    assert unknown.value.loc == ("vision", "chat_handler") and "llava-1-6" in unknown.value.message
    with pytest.raises(SettingError) as resource:
        LlamaCppBackend(_settings(tmp_path, model, mmproj, gpu_resource="gpu7"), spec)
    assert resource.value.loc == ("vision", "gpu_resource")
    # every advertised name resolves in the installed llama-cpp-python, and aliases land on them
    for name in CHAT_HANDLERS:
        assert resolve_chat_handler(name)[0] == name
    assert resolve_chat_handler("llama3-vision-alpha")[0] == "llama-3-vision-alpha"
    assert resolve_chat_handler("Qwen2.5-VL")[0] == "qwen2.5-vl"


@pytest.mark.parametrize("which", ["model", "mmproj"])
def test_llamacpp_backend_bad_model_file_is_backend_error(
    tiny_llava: tuple[Path, Path], tmp_path: Path, which: str
) -> None:
    """A broken GGUF, text model or projector, fails the load (not a later image) with a BackendError."""
    from dropwarden_vision.backend import BackendError
    from dropwarden_vision.llamacpp import LlamaCppBackend

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    model, mmproj = tiny_llava
    settings = _settings(
        tmp_path, broken if which == "model" else model, broken if which == "mmproj" else mmproj
    )
    backend = LlamaCppBackend(settings, _spec(settings))
    try:
        with pytest.raises(BackendError, match="cannot load the model"):
            backend.load()
        with pytest.raises(BackendError, match="cannot load the model"):
            backend.judge(_prepared())
        assert backend.loads == 0
    finally:
        backend.close()


# ---------------------------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tiny_llava: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """`python -m llama_cpp.server` serving the tiny model; yields its base URL (…/v1)."""
    model, mmproj = tiny_llava
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPWARDEN_")}
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        "--clip_model_path", str(mmproj),
        "--chat_format", "llava-1-5",
        "--model_alias", "tiny-llava",
        "--n_ctx", "4096",
        "--n_threads", "2",
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"llama_cpp.server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(base_url + "/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"llama_cpp.server not ready in {SERVER_START_TIMEOUT}s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _openai_settings(tmp_path: Path, base_url: str, **vision: object) -> Settings:
    fields = {
        "enabled": True,
        "backend": "openai",
        "base_url": base_url,
        "model": "tiny-llava",
        "timeout": 60.0,
        "retries": 0,
        **vision,
    }
    return Settings(
        vision=VisionSettings(**fields),
        gpu=GpuSettings(lock_dir=tmp_path / "gate", resources={"gpu0": 1, "vision-endpoint": 4}),
    )


def test_server_json_object_with_schema_answers_valid_json(llama_server: str, tmp_path: Path) -> None:
    import openai

    spec = _spec(_openai_settings(tmp_path, llama_server))
    client = openai.OpenAI(base_url=llama_server, api_key="sk-no-key", max_retries=0, timeout=60)
    try:
        assert "tiny-llava" in [m.id for m in client.models.list().data]
        completion = client.chat.completions.create(
            model="tiny-llava",
            messages=_chat(spec),
            response_format={"type": "json_object", "schema": spec.schema},  # type: ignore[typeddict-unknown-key]
            temperature=0,
            max_tokens=300,
        )
        _assert_schema_valid(json.loads(completion.choices[0].message.content or ""), spec.schema)
        # the documented limitation: OpenAI's json_schema form is refused with a 500
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="tiny-llava",
                messages=_chat(spec),
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "dropwarden_verdict", "schema": spec.schema, "strict": True},
                },
                max_tokens=300,
            )
    finally:
        client.close()


def _chat(spec) -> list:
    from dropwarden_vision.backend import chat_messages

    return chat_messages(_prepared(), spec.prompt)


def test_openai_backend_against_llama_server_falls_back_to_json_object(
    llama_server: str, tmp_path: Path
) -> None:
    from dropwarden_vision.openai_backend import OpenAIBackend, forget_formats, remembered_format

    forget_formats()
    settings = _openai_settings(tmp_path, llama_server, response_format="auto")
    backend = OpenAIBackend(settings, _spec(settings))
    try:
        assert "tiny-llava" in backend.list_models()
        probe = backend.probe(_prepared())
        assert probe.mode == "json_object", (probe.rejected, probe.error)
        assert len(probe.rejected) == 1 and probe.rejected[0].startswith("json_schema: HTTP 500")
        _assert_answer(probe.answer)
        first = backend.judge(_prepared(0))
        _assert_answer(first)
        assert remembered_format(backend.base_url, "tiny-llava") == "json_object"
        _assert_answer(backend.judge(_prepared(5)))
    finally:
        backend.close()
        forget_formats()
