"""Vision endpoint pool: `[vision] base_url` as a list, against real model server processes on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from dropwarden.config import Settings
from dropwarden.judge.judge import Judge
from dropwarden.redact import Fingerprinter
from dropwarden.registry import DetectContext, Registry
from dropwarden.verdict import VerdictKind
from dropwarden.views import ImageView
from dropwarden_vision.backend import BackendError
from dropwarden_vision.detector import VisionDetector
from dropwarden_vision.openai_backend import OpenAIBackend, forget_formats, remembered_format
from dropwarden_vision.pool import EndpointPool, NoEndpoint
from dropwarden_vision.settings import VisionSettings

from .conftest import run_cli

KEY = b"k" * 32
SERVER_SCRIPT = Path(__file__).with_name("vision_server.py")


class ServerProcess:
    """tests/vision_server.py in its own process; `kill()` is SIGKILL, `start()` again takes the same port."""

    def __init__(self, delay: float = 0.0, status: int = 200, flags: tuple[str, ...] = ()) -> None:
        self.delay = delay
        self.status = status
        self.flags = flags
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), "--port", str(self.port), *self.options],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("PORT "), f"the server did not start: {line!r}"
        self.port = int(line.split()[1])

    @property
    def options(self) -> list[str]:
        return ["--delay", str(self.delay), "--status", str(self.status), *self.flags]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def chats(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as response:
            return int(json.load(response)["chats"])

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)


@pytest.fixture
def servers():
    started: list[ServerProcess] = []

    def start(
        count: int,
        delays: tuple[float, ...] = (),
        statuses: tuple[int, ...] = (),
        flags: tuple[tuple[str, ...], ...] = (),
    ) -> list[ServerProcess]:
        made = [
            ServerProcess(
                delays[i] if i < len(delays) else 0.0,
                statuses[i] if i < len(statuses) else 200,
                flags[i] if i < len(flags) else (),
            )
            for i in range(count)
        ]
        started.extend(made)
        return made

    yield start
    for server in started:
        server.kill()


@pytest.fixture(autouse=True)
def _fresh_formats():
    forget_formats()
    yield
    forget_formats()


@pytest.fixture
def settings_for(tmp_path: Path):
    def make(base_url: str | list[str], **vision: Any) -> Settings:
        vision = {"enabled": True, "timeout": 5.0, "retries": 0, "base_url": base_url, **vision}
        return Settings(
            vision=vision,
            gpu={"lock_dir": str(tmp_path / "gate"), "resources": {"gpu0": 1, "vision-endpoint": 16}},
            state={"dir": str(tmp_path / "state")},
        )

    return make


@pytest.fixture
def detector_for(settings_for):
    made: list[VisionDetector] = []

    def make(base_url: str | list[str], **vision: Any) -> VisionDetector:
        detector = VisionDetector(settings_for(base_url, **vision))
        made.append(detector)
        return detector

    yield make
    for detector in made:
        detector.close()


def ctx() -> DetectContext:
    return DetectContext(fingerprint=Fingerprinter(KEY), display_path="/drop/picture.png")


def image_view() -> ImageView:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(out, format="PNG")
    return ImageView("image", out.getvalue(), "png", {"source": "file"})


def judge_many(detector: VisionDetector, count: int, threads: int) -> list[Any]:
    """`count` detections from `threads` threads; each result is the findings or the exception."""

    def one(_: int) -> Any:
        try:
            return detector.detect(image_view(), ctx())
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


def states(detector: VisionDetector) -> list[str]:
    return [row["state"] for row in detector.backend.stats()]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------- settings


def test_base_url_is_a_url_or_a_non_empty_list_of_distinct_urls():
    assert VisionSettings(base_url="http://a:1/v1").base_urls == ["http://a:1/v1"]
    assert VisionSettings(base_url=["http://a:1/v1", "http://b:1/v1"]).base_urls == [
        "http://a:1/v1",
        "http://b:1/v1",
    ]
    with pytest.raises(ValidationError, match="non-empty list"):
        VisionSettings(base_url=[])
    with pytest.raises(ValidationError, match="URL 2 is listed twice") as caught:
        VisionSettings(base_url=["http://user:pw@a:1/v1", "http://user:pw@a:1/v1/"])
    assert "pw@" not in str(caught.value).split("input_value")[0]  # the message itself shows no password


def test_a_string_base_url_keeps_the_single_endpoint_backend_and_the_detectors_breaker(servers, detector_for):
    (server,) = servers(1)
    detector = detector_for(server.url, circuit_failures=2, circuit_open_seconds=30)
    assert type(detector.backend) is OpenAIBackend
    assert detector.detect(image_view(), ctx())
    server.kill()
    for _ in range(2):
        with pytest.raises(BackendError, match="cannot reach"):
            detector.detect(image_view(), ctx())
    assert detector.circuit.state == "open"
    assert "vision backend failing (circuit open for 30s)" in detector.health()["vision"]


# ---------------------------------------------------------------------------------------- balancing


def test_requests_go_to_the_endpoint_with_fewest_in_flight_so_a_slow_server_gets_fewer(servers, detector_for):
    slow, fast = servers(2, delays=(1.5, 0.0))
    detector = detector_for([slow.url, fast.url], response_format="json_schema")
    results = judge_many(detector, count=16, threads=3)
    assert all(isinstance(r, list) and r for r in results), results
    assert slow.chats() + fast.chats() == 16
    # Round robin would send the slow server 8; least in flight sends it one or two at a time.
    assert slow.chats() <= 4, (slow.chats(), fast.chats())
    assert [row["requests"] for row in detector.backend.stats()] == [slow.chats(), fast.chats()]


def test_equally_loaded_endpoints_take_turns_and_each_remembers_its_own_response_format(
    servers, detector_for
):
    endpoints = servers(3, flags=((), ("--no-json-schema",), ()))
    detector = detector_for([s.url for s in endpoints])
    assert isinstance(detector.backend, EndpointPool)
    for _ in range(6):
        assert detector.detect(image_view(), ctx())
    # the second one probed json_schema (rejected), then json_object, once: 3 requests for its 2 images
    assert [s.chats() for s in endpoints] == [2, 3, 2]
    assert [remembered_format(s.url, "llava") for s in endpoints] == [
        "json_schema",
        "json_object",
        "json_schema",
    ]


# ---------------------------------------------------------------------------------------- failures


def test_a_killed_endpoints_work_goes_to_the_others_its_breaker_opens_then_closes_when_it_is_back(
    servers, detector_for
):
    endpoints = servers(3, delays=(0.05, 0.05, 0.05))
    victim = endpoints[2]
    detector = detector_for(
        [s.url for s in endpoints],
        circuit_failures=2,
        circuit_open_seconds=3.0,
        response_format="json_schema",
    )
    with ThreadPoolExecutor(1) as killer:
        killing = killer.submit(lambda: (time.sleep(0.1), victim.kill()))
        results = judge_many(detector, count=18, threads=3)
        killing.result()
    assert all(isinstance(r, list) and r for r in results), results  # nothing lost with the server
    assert states(detector) == ["closed", "closed", "open"]
    health = detector.health()["vision"]
    assert (
        health.startswith("1 of 3 vision endpoints failing: http://127.0.0.1:") and "cannot reach" in health
    )

    sent = detector.backend.stats()[2]["requests"]  # type: ignore[attr-defined]
    assert all(judge_many(detector, count=6, threads=2))
    assert detector.backend.stats()[2]["requests"] == sent  # open: not even tried

    victim.start()
    waited = time.monotonic()
    while states(detector)[2] != "half_open" and time.monotonic() - waited < 5:
        time.sleep(0.05)
    assert states(detector)[2] == "half_open"
    for _ in range(3):  # taking turns, the third endpoint gets its trial call
        assert detector.detect(image_view(), ctx())
    assert victim.chats() == 1
    assert states(detector) == ["closed", "closed", "closed"] and detector.health() == {}


def test_a_5xx_or_a_timeout_is_tried_once_on_another_endpoint_within_the_deadline(servers, detector_for):
    broken, slow, good = servers(3, delays=(0.0, 3.0, 0.0), statuses=(500, 200, 200))
    detector = detector_for([broken.url, good.url], response_format="json_schema", circuit_failures=5)
    for _ in range(4):  # in turn: broken first (500, then the good one), then the good one directly
        assert detector.detect(image_view(), ctx())
    assert (broken.chats(), good.chats()) == (2, 4)

    detector = detector_for([slow.url, good.url], response_format="json_schema", timeout=0.5)
    started = time.monotonic()
    assert detector.detect(image_view(), ctx())  # the slow one first: no answer in 0.5s, then the good
    assert time.monotonic() - started < 2.5
    assert slow.chats() == 1 and good.chats() == 5


def test_a_request_is_tried_on_two_endpoints_at_most(servers, detector_for):
    endpoints = servers(3, statuses=(500, 500, 500))
    detector = detector_for([s.url for s in endpoints], response_format="json_schema")
    with pytest.raises(BackendError, match="answered HTTP 500: CUDA error: out of memory"):
        detector.detect(image_view(), ctx())
    assert sum(s.chats() for s in endpoints) == 2


def test_when_every_endpoint_is_down_the_image_is_unscanned_never_clean(servers, settings_for, tmp_path):
    endpoints = servers(2)
    settings = settings_for([s.url for s in endpoints], circuit_failures=1, response_format="json_schema")
    for server in endpoints:
        server.kill()
    registry = Registry()
    detector = VisionDetector(settings)
    registry.add("detectors", "vision", detector)
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / "photo.png").write_bytes(image_view().data)

    first = _judge(registry, settings, tmp_path / "drop", "photo.png")  # both tried, both refuse
    assert first.verdict.kind == VerdictKind.UNSCANNED
    assert "cannot reach http://127.0.0.1:" in first.verdict.reason
    assert states(detector) == ["open", "open"]

    started = time.monotonic()
    with pytest.raises(NoEndpoint, match=r"^every vision endpoint's circuit is open: http://127\.0\.0\.1:"):
        detector.detect(image_view(), ctx())
    assert time.monotonic() - started < 0.2
    second = _judge(registry, settings, tmp_path / "drop", "photo.png")
    assert second.verdict.kind == VerdictKind.UNSCANNED
    assert "every vision endpoint's circuit is open" in second.verdict.reason
    assert detector.health()["vision"].startswith("every vision endpoint failing: ")
    detector.close()


def _judge(registry: Registry, settings: Settings, folder: Path, name: str):
    judge = Judge(registry, settings, Fingerprinter(KEY))
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return judge.judge_name(fd, name, str(folder / name))
    finally:
        os.close(fd)
        judge.close()


# ---------------------------------------------------------------------------------------- doctor


def test_doctor_checks_every_endpoint_of_the_pool(servers, write_config):
    good, down = servers(2)
    down.kill()
    config = write_config(
        f'[vision]\nenabled = true\nbase_url = ["{good.url}", "{down.url}"]\ntimeout = 3\nretries = 0\n'
    )
    result = run_cli("doctor", "--config", str(config), timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if " vision" in line]
    assert f"ok    vision model @ {good.url}: 'llava' is served" in lines, lines
    assert any(line.startswith(f"ok    vision image round trip @ {good.url}: a valid") for line in lines)
    assert any(
        line.startswith(f"FAIL  vision endpoint @ {down.url}: {down.url}: GET /models") for line in lines
    )
