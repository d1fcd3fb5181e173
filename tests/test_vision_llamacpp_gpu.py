"""The embedded llama.cpp backend on a GPU: every layer offloaded, the gate held, NVML admission.

Runs where llama-cpp-python was built with CUDA and NVML sees a GPU; CI has neither, so it skips there
(run it on a GPU host by hand, README "Vision"). numpy is imported before llama_cpp on purpose: a daemon
loads libstdc++ long before its first model, and a badly linked CUDA build crashes exactly then.
"""

from __future__ import annotations

from pathlib import Path

import numpy  # noqa: F401  (first, see the docstring)
import pytest
from structlog.testing import capture_logs

from dropwarden.gate import free_gpu_memory_mib, get_gate

from .test_vision_llamacpp import _assert_answer, _gpu_build_load_problem, _prepared, _settings, _spec
from .tiny_llava import N_LAYER, write_tiny_llava

ALL_LAYERS = (N_LAYER + 1, N_LAYER + 1)  # llama.cpp counts the output layer as one more


@pytest.fixture(scope="module")
def gpu_free_mib() -> int:
    """Free memory of GPU 0 per NVML; skips without a CUDA build of llama-cpp-python or a GPU."""
    llama_cpp = pytest.importorskip("llama_cpp")
    if not llama_cpp.llama_supports_gpu_offload():
        pytest.skip("llama-cpp-python was built without a GPU backend")
    free = free_gpu_memory_mib()
    if free is None:
        pytest.skip("NVML sees no GPU (nvidia-ml-py and a driver are needed)")
    return free


@pytest.fixture(scope="module")
def llava_pair(gpu_free_mib: int, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("gguf")
    pair = write_tiny_llava(tmp_path_factory.mktemp("tiny-llava-gpu"))
    problem = _gpu_build_load_problem(pair[0])
    if problem:
        pytest.fail(problem)
    return pair


def test_every_layer_on_the_gpu_judges_images_and_says_so(
    llava_pair: tuple[Path, Path], tmp_path: Path, gpu_free_mib: int
) -> None:
    from dropwarden_vision.llamacpp import LlamaCppBackend

    settings = _settings(tmp_path, *llava_pair, n_gpu_layers=-1, gpu={"min_free_memory_mib": 1024})
    backend = LlamaCppBackend(settings, _spec(settings))
    try:
        with capture_logs() as logs:
            answers = [backend.judge(_prepared(seed)) for seed in range(3)]
        for answer in answers:
            _assert_answer(answer)
        assert backend.loads == 1 and backend.offloaded_layers == ALL_LAYERS
        loaded = [entry for entry in logs if entry["event"] == "vision model loaded"]
        assert [entry["gpu_layers"] for entry in loaded] == ["{}/{}".format(*ALL_LAYERS)]
        assert get_gate(settings.gpu).stats()["gpu0"]["in_flight"] == 0
    finally:
        backend.close()


def test_no_layers_offloaded_with_n_gpu_layers_0(
    llava_pair: tuple[Path, Path], tmp_path: Path, gpu_free_mib: int
) -> None:
    from dropwarden_vision.llamacpp import LlamaCppBackend

    settings = _settings(tmp_path, *llava_pair, n_gpu_layers=0)
    backend = LlamaCppBackend(settings, _spec(settings))
    try:
        _assert_answer(backend.judge(_prepared()))
        assert backend.offloaded_layers == (0, ALL_LAYERS[1])
    finally:
        backend.close()


def test_nvml_admission_reads_the_real_gpu(
    llava_pair: tuple[Path, Path], tmp_path: Path, gpu_free_mib: int
) -> None:
    from dropwarden_vision.backend import BackendError
    from dropwarden_vision.llamacpp import LlamaCppBackend

    too_much = gpu_free_mib + 1_000_000
    settings = _settings(tmp_path, *llava_pair, n_gpu_layers=-1, gpu={"min_free_memory_mib": too_much})
    backend = LlamaCppBackend(settings, _spec(settings))
    try:
        with pytest.raises(BackendError, match=f"MiB free; {too_much} MiB required"):
            backend.judge(_prepared())
        assert backend.loads == 0
        assert get_gate(settings.gpu).stats()["gpu0"]["in_flight"] == 0
    finally:
        backend.close()

    enough = _settings(tmp_path, *llava_pair, n_gpu_layers=-1, gpu={"min_free_memory_mib": 64})
    backend = LlamaCppBackend(enough, _spec(enough))
    try:
        backend.load()
        assert backend.loads == 1 and backend.offloaded_layers == ALL_LAYERS
    finally:
        backend.close()
