"""The real llama.cpp `llama-server` for tests: where its binary is, and a server over the tiny LLaVA pair.

The binary is built once by `packaging/dev/build-llama-server.sh` (`make setup` runs it) into
`~/.cache/dropwarden/llama-server-<llama-cpp-python version>/llama-server`; `$DROPWARDEN_LLAMA_SERVER`
names another one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = "packaging/dev/build-llama-server.sh"
START_TIMEOUT = 120.0
MODEL_ALIAS = "tiny-llava"


def pinned_version() -> str:
    """The llama-cpp-python version pinned in pyproject.toml's `llamacpp` extra."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r"llama-cpp-python\[server\]==([0-9][0-9.]*)", text)
    assert match, "pyproject.toml pins no llama-cpp-python version"
    return match.group(1)


def server_binary() -> Path | None:
    """The llama-server binary to test with, or None when it was never built."""
    named = os.environ.get("DROPWARDEN_LLAMA_SERVER")
    if named:
        return Path(named) if os.access(named, os.X_OK) else None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dropwarden"
    candidate = Path(os.environ.get("DROPWARDEN_CACHE_DIR") or cache) / f"llama-server-{pinned_version()}"
    binary = candidate / "llama-server"
    return binary if os.access(binary, os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LlamaServer:
    """A running llama-server: `url` (its root), `base_url` (…/v1, for the openai backend), its log."""

    process: subprocess.Popen
    port: int
    log_path: Path
    parallel: int
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def get(self, path: str, timeout: float = 5.0) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def slots_processing(self) -> int:
        """How many of the server's slots are working on a request now (its /slots endpoint)."""
        return sum(1 for slot in self.get("/slots") if slot.get("is_processing"))

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def freeze(self) -> None:
        """SIGSTOP: the server accepts connections (the kernel does) but answers nothing."""
        self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        self.stopped = True

    def stop(self) -> None:
        if self.stopped:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.stopped = True


def start_llama_server(
    binary: Path, model: Path, mmproj: Path, log_dir: Path, *, parallel: int = 2, threads: int = 2
) -> LlamaServer:
    """Start llama-server on 127.0.0.1 with the model and its projector; return once /health says ok.
    Raises RuntimeError with the end of the server's log when it exits or is not ready in time."""
    port = free_port()
    log_path = log_dir / f"llama-server-{port}.log"
    command = [
        str(binary),
        "--model", str(model),
        "--mmproj", str(mmproj),
        "--alias", MODEL_ALIAS,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--ctx-size", str(2560 * parallel),  # the prompt is ~1500 tokens: one per character
        "--parallel", str(parallel),
        "--threads-http", str(parallel + 4),  # its default is one per core: 2 would cap requests at 2
        "--threads", str(threads),
        "--n-gpu-layers", "0",
        "--no-warmup",
        "--metrics",
        "--slots",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LlamaServer(process, port, log_path, parallel)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            server.stopped = True
            raise RuntimeError(f"llama-server exited with {process.returncode}:\n{server.log()[-4000:]}")
        try:
            if server.get("/health", timeout=2).get("status") == "ok":
                return server
        except (urllib.error.URLError, OSError, ValueError):
            pass  # not listening yet, or 503 while the model loads
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"llama-server not ready in {START_TIMEOUT:g}s:\n{server.log()[-4000:]}")
        time.sleep(0.2)
