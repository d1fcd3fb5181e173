"""Where the MangaOCR model comes from: a local directory or the local Hugging Face cache (downloaded only
when allowed), the device it runs on, and the libraries it needs, imported with their chatter turned off."""

from __future__ import annotations

import contextlib
import mmap
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from dropwarden_ocr.engine import OcrError, short_error

log = structlog.get_logger("dropwarden.ocr")

DEFAULT_MODEL = "kha-white/manga-ocr-base"
# What `save_pretrained` writes for the real model and the tokenizer it needs; weights in either format.
_MODEL_FILES = ("config.json", "preprocessor_config.json", "vocab.txt")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_hub_lock = threading.Lock()


def writable_code_forbidden() -> bool:
    """Whether this process may not map memory writable and executable: systemd's
    `MemoryDenyWriteExecute=yes` (the shipped unit sets it) or the kernel's per-process MDWE."""
    try:
        probe = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError:
        return True
    probe.close()
    return False


def import_manga_ocr() -> tuple[Any, Any]:
    """(torch, the `manga_ocr.MangaOcr` class), transformers' logging turned down to errors and its
    progress bars off, manga_ocr's loguru lines silenced; OcrError naming the extra when missing."""
    try:
        import torch
        from transformers.utils import logging as transformers_logging

        # Before manga_ocr's import: importing transformers' ViTImageProcessor without torchvision
        # warns on stderr. Loading bars and warnings from transformers are dropped from here on.
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        from loguru import logger as loguru_logger
        from manga_ocr import MangaOcr
    except ImportError as exc:
        raise OcrError(
            "detector_error",
            f"MangaOCR is not installed ({short_error(exc)});"
            " install the extra: pip install 'dropwarden[mangaocr]'",
        ) from None
    loguru_logger.disable("manga_ocr")  # its INFO lines go to stderr; we log the load ourselves
    return torch, MangaOcr


def resolve_device(configured: str, torch: Any) -> str:
    """The device to load on ("cpu" or "cuda:N") for the configured "cpu", "auto", "cuda" or "cuda:N";
    OcrError when the CUDA device asked for is not there."""
    if configured == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if configured == "auto":
        return "cuda:0" if available else "cpu"
    if not available:
        raise OcrError(
            "detector_error",
            f"MangaOCR: device {configured!r} asked for, but torch {torch.__version__} sees no CUDA"
            " device (a CPU-only build, or no driver); use device 'cpu' or 'auto'",
        )
    index = int(configured.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise OcrError(
            "detector_error",
            f"MangaOCR: device {configured!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s)",
        )
    return f"cuda:{index}"


def local_dir(model: str | Path) -> Path | None:
    """The model as a local directory, or None for a hub name (`owner/name` that is not a path here)."""
    if isinstance(model, Path):
        return model.expanduser()
    if not model:
        raise ValueError("model must name a directory or a hub model")
    path = Path(model).expanduser()
    if path.exists() or not _HUB_NAME.fullmatch(model):
        return path
    return None


def model_dir(model: str, local: Path | None, *, cache_dir: str | None, allow_download: bool) -> Path:
    """A local directory with the model's files: `local`, or the hub name `model` resolved through the
    local cache (fetched when `allow_download`). OcrError when it is missing or incomplete."""
    directory = local if local is not None else _from_hub(model, cache_dir, allow_download)
    if not directory.is_dir():
        raise OcrError("detector_error", f"MangaOCR model directory {directory} does not exist")
    missing = [name for name in _MODEL_FILES if not (directory / name).is_file()]
    if not any((directory / name).is_file() for name in _WEIGHT_FILES):
        missing.append(" or ".join(_WEIGHT_FILES))
    if missing:
        raise OcrError(
            "detector_error",
            f"{directory} is not a MangaOCR model directory (missing {', '.join(missing)});"
            f" it should hold a copy of {DEFAULT_MODEL}",
        )
    return directory


def _from_hub(model: str, cache_dir: str | None, allow_download: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, cache_dir=cache_dir, local_files_only=True))
    except LocalEntryNotFoundError:
        if not allow_download:
            raise OcrError(
                "detector_error",
                f"MangaOCR model {model!r} is no directory here and not in the local Hugging Face"
                f" cache ({cache_dir or _default_cache()}), and downloading is off: download it"
                f" (`hf download {model}`) or point the model setting at a local copy",
            ) from None
    except Exception as exc:
        raise OcrError(
            "detector_error", f"MangaOCR: cannot look up {model!r} in the cache: {short_error(exc)}"
        ) from None
    log.info("mangaocr: downloading the model", model=model)
    try:
        return Path(snapshot_download(model, cache_dir=cache_dir))
    except Exception as exc:
        raise OcrError(
            "detector_error", f"MangaOCR: cannot fetch {model!r} from the hub: {short_error(exc)}"
        ) from None


def _default_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """No HTTP from huggingface_hub (and so transformers) while loading from a local directory."""
    from huggingface_hub import constants

    with _hub_lock:
        before = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = before


@contextlib.contextmanager
def on_cuda_device(torch: Any, device: str) -> Iterator[None]:
    """`device` is torch's current CUDA device inside (nothing changes for the CPU)."""
    if device.startswith("cuda"):
        with torch.cuda.device(int(device.partition(":")[2] or 0)):
            yield
    else:
        yield
