"""The `openai` vision backend against the real llama.cpp `llama-server` serving the tiny random LLaVA pair.

The binary comes from `packaging/dev/build-llama-server.sh` (`make setup`): a missing one fails these
tests in CI and skips them on a developer machine. The model's weights are random, so its answers are
either schema-shaped (under a grammar) or garbage (without one): either way an image ends as a parsed
verdict or `unscanned`, never a crash, never `clean` on garbage.
"""

from __future__ import annotations

import importlib.util
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from dropwarden.config import GpuSettings, LimitsSettings, Settings
from dropwarden_vision.settings import VisionCategory, VisionSettings

from .conftest import require, run_cli
from .llama_server import BUILD_SCRIPT, MODEL_ALIAS, LlamaServer, server_binary, start_llama_server
from .tiny_llava import write_tiny_llava

HAVE_GGUF = importlib.util.find_spec("gguf") is not None
# The tiny vocabulary spends one token per character: a short prompt and one category keep a request
# to a few hundred tokens, which a portable CPU build on a busy two-core machine still answers in time.
PROMPT = "Judge the image."
ONE_CATEGORY = 'categories = { id_document = { type = "VISION_ID_DOCUMENT" } }'
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def binary() -> Path:
    found = server_binary()
    require(found is not None, f"llama-server (build it once: sh {BUILD_SCRIPT})")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    require(HAVE_GGUF, "gguf (the `llamacpp` extra)")
    return write_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def server(
    binary: Path, tiny_llava: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """One llama-server with 4 slots for the module (tests that kill a server start their own)."""
    running = start_llama_server(binary, *tiny_llava, tmp_path_factory.mktemp("llama-server"), parallel=4)
    try:
        yield running
    finally:
        running.stop()


def _settings(tmp_path: Path, base_url: str, gate_slots: int = 4, **vision: object) -> Settings:
    fields = {
        "enabled": True,
        "backend": "openai",
        "base_url": base_url,
        "model": MODEL_ALIAS,
        "timeout": TIMEOUT,
        "retries": 0,
        "prompt": PROMPT,
        "categories": {"id_document": VisionCategory(type="VISION_ID_DOCUMENT")},
        **vision,
    }
    return Settings(
        vision=VisionSettings(**fields),
        gpu=GpuSettings(lock_dir=tmp_path / "gate", resources={"gpu0": 1, "vision-endpoint": gate_slots}),
        limits=LimitsSettings(detector_timeout=4 * TIMEOUT),
    )


def _png(seed: int = 0) -> bytes:
    image = Image.new("RGB", (96, 64), (240, 240, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((8 + seed, 8, 60, 40), outline=(20, 20, 160), width=3)
    draw.text((10, 44), f"ID {1234 + seed}", fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _prepared(seed: int = 0):
    from dropwarden_vision.images import ImageLimits, prepare_image

    return prepare_image(_png(seed), ImageLimits())


def _backend(settings: Settings):
    from dropwarden_vision.openai_backend import OpenAIBackend
    from dropwarden_vision.schema import VerdictSpec

    return OpenAIBackend(settings, VerdictSpec.from_settings(settings.vision))


def test_llama_server_loads_the_tiny_llava_with_its_projector(server: LlamaServer) -> None:
    """The GGUF pair carries every metadata key llama-server needs: it serves the model, with vision."""
    assert server.get("/health") == {"status": "ok"}
    assert MODEL_ALIAS in [model["id"] for model in server.get("/v1/models")["data"]]
    assert server.get("/props")["modalities"]["vision"] is True
    assert len(server.get("/slots")) == 4


def test_openai_backend_probes_llama_server_and_remembers_json_schema(
    server: LlamaServer, tmp_path: Path
) -> None:
    """llama-server takes OpenAI's json_schema response format (python's llama_cpp.server does not):
    the probe's first choice is accepted, remembered for the endpoint, and the answer parses."""
    from dropwarden_vision.openai_backend import forget_formats, remembered_format
    from dropwarden_vision.schema import Answer

    forget_formats()
    backend = _backend(_settings(tmp_path, server.base_url))
    try:
        probe = backend.probe(_prepared())
        assert (probe.mode, probe.rejected, probe.error) == ("json_schema", [], None)
        assert isinstance(probe.answer, Answer)
        assert remembered_format(backend.base_url, MODEL_ALIAS) is None  # a probe remembers nothing
        answer = backend.judge(_prepared(3))
        assert isinstance(answer, Answer) and 0.0 <= answer.confidence <= 1.0
        assert remembered_format(backend.base_url, MODEL_ALIAS) == "json_schema"
    finally:
        backend.close()
        forget_formats()
    # llama.cpp's own form (json_object with a schema) is accepted too, when configured
    configured = _backend(_settings(tmp_path, server.base_url, response_format="json_object"))
    try:
        assert isinstance(configured.judge(_prepared(4)), Answer)
    finally:
        configured.close()


def _scan_image(write_config, tmp_path: Path, server: LlamaServer, extra: str) -> dict:
    image = tmp_path / "card.png"
    image.write_bytes(_png(7))
    config = write_config(
        f'[ocr]\nenabled = false\n[vision]\nenabled = true\nbase_url = "{server.base_url}"\n'
        f'model = "{MODEL_ALIAS}"\ntimeout = {TIMEOUT}\nretries = 0\nprompt = "{PROMPT}"\n{ONE_CATEGORY}\n'
        f"{extra}[limits]\ndetector_timeout = {4 * TIMEOUT}\n"
    )
    result = run_cli("scan", "--config", str(config), "--format", "json", str(image), timeout=6 * TIMEOUT)
    assert result.returncode in (0, 1, 3), result.stdout + result.stderr  # clean, finding, unscanned
    (record,) = json.loads(result.stdout)["files"]
    return record


def test_scan_with_a_grammar_gives_the_parsed_verdict(server: LlamaServer, write_config, tmp_path: Path):
    """Under the schema grammar the random model's answer is a verdict; `dropwarden scan` reports it
    (min_confidence 0: whatever it says counts) and never leaves the image unscanned."""
    record = _scan_image(write_config, tmp_path, server, "min_confidence = 0.0\n")
    assert record["verdict"] in ("finding", "clean"), record
    assert record["reason"] is None
    assert all(finding["type"].startswith("VISION_") for finding in record["findings"])
    assert (record["verdict"] == "finding") == bool(record["findings"])


def test_scan_of_a_garbage_answer_is_unscanned_never_clean(server: LlamaServer, write_config, tmp_path: Path):
    """Without a grammar (`response_format = "prompt"`) the random model writes no JSON: the image is
    unscanned with the detector's error, never clean."""
    record = _scan_image(write_config, tmp_path, server, 'response_format = "prompt"\n')
    assert record["verdict"] == "unscanned", record
    assert "detector_error" in record["reason"] and "MalformedAnswer" in record["reason"], record
    assert record["findings"] == []


def test_server_killed_mid_request_is_unscanned_and_opens_the_circuit(
    binary: Path, tiny_llava: tuple[Path, Path], tmp_path: Path
) -> None:
    """A request outstanding when the server dies fails (a BackendError, which the core records as
    unscanned/detector_error); after `circuit_failures` such failures the breaker fails fast."""
    from dropwarden.verdict import Problem, Reason
    from dropwarden_vision.backend import BackendError
    from dropwarden_vision.circuit import CircuitOpen
    from dropwarden_vision.detector import VisionDetector, endpoint_failure

    dying = start_llama_server(binary, *tiny_llava, tmp_path, parallel=1)
    detector = VisionDetector(_settings(tmp_path, dying.base_url, circuit_failures=2))

    def judge(seed: int):
        return detector.circuit.call(lambda: detector.backend.judge(_prepared(seed)), endpoint_failure)

    try:
        judge(0)  # healthy: the format is probed and remembered, so the next image is one request
        failures: list[BaseException] = []

        def outstanding() -> None:
            try:
                judge(1)
            except BaseException as exc:
                failures.append(exc)

        dying.freeze()  # the request is accepted by the kernel and then never answered...
        worker = threading.Thread(target=outstanding)
        worker.start()
        time.sleep(1.0)
        dying.kill()  # ...until the server dies under it
        worker.join(60)
        assert not worker.is_alive()
        (failure,) = failures
        assert isinstance(failure, BackendError), repr(failure)
        assert Problem.from_exception(failure, "vision").reason is Reason.DETECTOR_ERROR
        assert detector.circuit.state == "closed" and detector.health() == {}

        with pytest.raises(BackendError, match="cannot reach"):
            judge(2)  # the second failure in a row opens the circuit
        assert detector.circuit.state == "open"
        started = time.monotonic()
        with pytest.raises(CircuitOpen):
            judge(3)
        assert time.monotonic() - started < 1.0  # fails fast, without calling the dead server
        assert "vision" in detector.health()
    finally:
        detector.close()
        dying.stop()


def test_concurrent_images_never_exceed_the_gate_slots_at_the_server(
    server: LlamaServer, tmp_path: Path
) -> None:
    """Two backends (as two daemons on one host) judge 8 images at once, each allowing 4 in flight,
    through a gate of 2 slots: llama-server, which has 4 slots, never works on more than 2 requests."""
    from dropwarden.gate import get_gate
    from dropwarden_vision.schema import Answer

    settings = _settings(tmp_path, server.base_url, gate_slots=2, max_in_flight=4)
    backends = [_backend(settings), _backend(settings)]
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(server.slots_processing())
            time.sleep(0.01)

    answers: list[object] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        try:
            result: object = backends[index % 2].judge(_prepared(index))
        except Exception as exc:
            result = exc
        with lock:
            answers.append(result)

    watcher = threading.Thread(target=watch)
    workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    watcher.start()
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)
    finally:
        stop.set()
        watcher.join(10)
        for backend in backends:
            backend.close()
    assert len(answers) == 8 and all(isinstance(a, Answer) for a in answers), answers
    assert 1 <= max(seen) <= 2, f"slots processing at once: {max(seen)}"
    assert get_gate(settings.gpu).stats()["vision-endpoint"]["in_flight"] == 0
