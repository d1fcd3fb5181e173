"""Vision throughput benchmark: images/s through the daemon versus a bare client, and in-flight limits.

    .venv/bin/python bench/vision_bench.py [--images 200] [--concurrency 4] [--latency-ms 200] [--json]

A local OpenAI-compatible server (a `ThreadingHTTPServer` in this process, on 127.0.0.1) answers every
chat completion with a clean verdict after a fixed latency, and records how many requests are in flight
at every moment. Two clients send N distinct small PNGs through it at the same concurrency C:

- bare: `openai.AsyncOpenAI` with C concurrent requests, the same request the daemon's backend sends
  (data URL + prompt + json_schema response format). images/s = N / (first request to last answer).
- daemon: `python -m dropwarden run` as a child with `[vision] max_in_flight = C`; the N images are
  written to a staging folder beforehand and renamed into the watched folder at once (a backlog).
  images/s = N / (first rename to the last decision record in the audit log).

Overhead = 1 - daemon / bare (target <= 5 %). Under the backlog the server must see exactly C requests in
flight at most (the limit held, never exceeded); the time-weighted average in flight is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
from PIL import Image

from dropwarden_vision.backend import MAX_TOKENS
from dropwarden_vision.schema import VerdictSpec
from dropwarden_vision.settings import VisionSettings

CLEAN = {"contains_sensitive": False, "categories": [], "confidence": 0.9, "description": ""}
MODEL = "llava"
TARGET_OVERHEAD = 5.0


# ------------------------------------------------------------------------------------------ the server


class FakeVisionServer:
    """OpenAI wire protocol with a fixed latency; counts requests and tracks in-flight over time."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests = 0
        self.bad_requests = 0
        self.formats: set[str] = set()
        self.changes: list[tuple[float, int]] = []  # (time.time(), in flight after the change)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-vision", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def reset(self) -> None:
        with self.lock:
            self.max_in_flight = self.in_flight
            self.requests = self.bad_requests = 0
            self.formats.clear()
            self.changes = [(time.time(), self.in_flight)]

    def enter(self, fmt: str | None) -> None:
        with self.lock:
            self.in_flight += 1
            self.changes.append((time.time(), self.in_flight))
            self.requests += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.formats.add(fmt or "none")

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.changes.append((time.time(), self.in_flight))

    def levels(self, start: float, end: float) -> dict[int, float]:
        """Seconds spent at each in-flight level between `start` and `end` (time.time() values)."""
        with self.lock:
            changes = list(self.changes)
        out: dict[int, float] = {}
        for (at, level), (until, _) in zip(changes, [*changes[1:], (end, 0)], strict=True):
            seconds = min(until, end) - max(at, start)
            if seconds > 0:
                out[level] = out.get(level, 0.0) + seconds
        return out

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes; with Nagle on, the body waits for the client's delayed
    # ACK (~40 ms on Linux), which would add a latency the server was not asked for.
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "b"}]})
        else:
            self._send(404, {"error": {"message": "not found", "type": "not_found"}})

    def do_POST(self) -> None:
        fake: FakeVisionServer = self.server.fake  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": "not found", "type": "not_found"}})
            return
        fmt = (body.get("response_format") or {}).get("type")
        fake.enter(fmt)
        try:
            has_image = any(
                part.get("type") == "image_url"
                for message in body.get("messages", [])
                if isinstance(message.get("content"), list)
                for part in message["content"]
            )
            time.sleep(fake.latency)
            if not has_image:
                with fake.lock:
                    fake.bad_requests += 1
                self._send(400, {"error": {"message": "no image", "type": "invalid_request_error"}})
                return
            self._send(200, _completion(json.dumps(CLEAN)))
        finally:
            fake.leave()


# ------------------------------------------------------------------------------------------ images


def make_pngs(count: int, side: int, seed: int) -> list[bytes]:
    """`count` distinct noise PNGs (distinct bytes, so nothing is deduplicated by hash)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    assert len(set(out)) == count
    return out


# ------------------------------------------------------------------------------------------ bare client


async def _bare(url: str, pngs: list[bytes], concurrency: int, timeout: float) -> tuple[float, float]:
    spec = VerdictSpec.from_settings(VisionSettings())
    client = openai.AsyncOpenAI(base_url=url, api_key="sk-no-key", timeout=timeout, max_retries=0)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for png in pngs:
        queue.put_nowait(png)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while not queue.empty():
            png = queue.get_nowait()
            data_url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            completion = await client.chat.completions.create(
                model=MODEL,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": data_url}},
                            {"type": "text", "text": spec.prompt},
                        ],
                    }
                ],
                temperature=0,
                max_tokens=MAX_TOKENS,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "dropwarden_verdict", "schema": spec.schema, "strict": True},
                },
            )
            answer = spec.parse(completion.choices[0].message.content)
            failures += answer.contains_sensitive

    started = time.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    ended = time.time()
    await client.close()
    if failures:
        raise SystemExit(f"bare client: {failures} unexpected answers")
    return started, ended


def run_bare(url: str, pngs: list[bytes], concurrency: int) -> tuple[float, float]:
    return asyncio.run(_bare(url, pngs, concurrency, timeout=60.0))


# ------------------------------------------------------------------------------------------ daemon


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class AuditTail:
    """Decision records appended to the audit JSONL, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.records: list[dict[str, Any]] = []

    def poll(self) -> int:
        if self.path.exists():
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
            self.offset += len(chunk)
            lines = (self.partial + chunk).split(b"\n")
            self.partial = lines.pop()
            for raw in lines:
                if b'"type":"decision"' in raw:
                    self.records.append(json.loads(raw))
        return len(self.records)

    def wait(self, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while self.poll() < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(self.records)} of {count} decisions after {timeout:g}s")
            time.sleep(0.05)
        return self.records


def write_config(root: Path, url: str, concurrency: int, workers: int, extra: str) -> Path:
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    config = root / "dropwarden.toml"
    config.write_text(
        f'[state]\ndir = "{root / "state"}"\n'
        f'[audit]\npath = "{root / "audit.jsonl"}"\n'
        f"[daemon]\nworkers = {workers}\n"
        f'[metrics]\nlisten = "127.0.0.1:0"\n'
        f'[gpu]\nlock_dir = "{root / "gate"}"\n'
        f'[vision]\nenabled = true\nbase_url = "{url}"\nmodel = "{MODEL}"\n'
        f'response_format = "json_schema"\nmax_in_flight = {concurrency}\nretries = 0\ntimeout = 30\n'
        "[ocr]\nenabled = false\n"  # the vision detector alone: no Tesseract run per image
        f'[[watch]]\npath = "{inbox}"\nquarantine_dir = "{root / ".quarantine"}"\n'
        f'on_finding = "leave"\non_unscanned = "leave"\n' + extra
    )
    return config


def start_daemon(config: Path) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPWARDEN_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dropwarden", "run", "--config", str(config), "--log-format", "json"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if '"event": "watching"' in line:
            break
    else:
        raise SystemExit("daemon did not start:\n" + "".join(lines[-20:]))
    # Keep draining stderr so a chatty daemon never blocks on a full pipe.
    threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True).start()
    return proc, lines


def run_daemon(
    server: FakeVisionServer, pngs: list[bytes], concurrency: int, workers: int, extra: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dw-vision-bench-") as tmp:
        root = Path(tmp)
        config = write_config(root, server.url, concurrency, workers, extra)
        inbox = root / "inbox"
        staging = root / "staging"
        staging.mkdir()
        names = [f"img-{index:06d}.png" for index in range(len(pngs))]
        for name, png in zip(names, pngs, strict=True):
            (staging / name).write_bytes(png)
        proc, log_lines = start_daemon(config)
        tail = AuditTail(root / "audit.jsonl")
        try:
            server.reset()
            first_rename = time.time()
            for name in names:
                os.rename(staging / name, inbox / name)
            renames_done = time.time()
            records = tail.wait(len(names), timeout=120 + 2 * len(names) * server.latency)
            cpu = _cpu_seconds(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    last = max(parse_time(r["time"]) for r in records)
    elapsed = last - first_rename
    levels = server.levels(first_rename, last)
    verdicts: dict[str, int] = {}
    for record in records:
        body = record.get("body", {})
        verdict = str(body.get("verdict") or body.get("decision") or body.get("outcome") or "?")
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
    return {
        "elapsed": elapsed,
        "renames_s": renames_done - first_rename,
        "levels": levels,
        "verdicts": verdicts,
        "cpu_s": cpu,
        "sample": records[0],
        "log_tail": log_lines[-5:],
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc (nan where unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


# ------------------------------------------------------------------------------------------ report


def level_stats(levels: dict[int, float], limit: int) -> tuple[float, float]:
    """Time-weighted average in flight, and the fraction of the time at the limit."""
    total = sum(levels.values())
    if total <= 0:
        return 0.0, 0.0
    average = sum(level * seconds for level, seconds in levels.items()) / total
    return average, levels.get(limit, 0.0) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="images per run (N)")
    parser.add_argument("--concurrency", type=int, default=4, help="C: bare concurrency = max_in_flight")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the server's fixed latency")
    parser.add_argument("--workers", type=int, default=None, help="[daemon] workers (default C + 2)")
    parser.add_argument("--side", type=int, default=64, help="image side in pixels")
    parser.add_argument("--config-extra", default="", help="TOML appended to the daemon's config")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    concurrency = args.concurrency
    workers = args.workers or concurrency + 2
    latency = args.latency_ms / 1000
    ideal = concurrency / latency

    pngs = make_pngs(2 * args.images, args.side, args.seed)
    server = FakeVisionServer(latency)
    try:
        server.reset()
        bare_start, bare_end = run_bare(server.url, pngs[: args.images], concurrency)
        bare_elapsed = bare_end - bare_start
        bare_levels = server.levels(bare_start, bare_end)
        bare_max, bare_requests = server.max_in_flight, server.requests

        daemon = run_daemon(server, pngs[args.images :], concurrency, workers, args.config_extra)
        with server.lock:
            daemon_max, daemon_requests = server.max_in_flight, server.requests
            daemon_bad, daemon_formats = server.bad_requests, sorted(server.formats)
    finally:
        server.close()

    bare_rate = args.images / bare_elapsed
    daemon_rate = args.images / daemon["elapsed"]
    overhead = (1 - daemon_rate / bare_rate) * 100
    bare_avg, bare_at = level_stats(bare_levels, concurrency)
    daemon_avg, daemon_at = level_stats(daemon["levels"], concurrency)
    result = {
        "images": args.images,
        "concurrency": concurrency,
        "latency_ms": args.latency_ms,
        "workers": workers,
        "ideal_images_per_s": round(ideal, 2),
        "bare_images_per_s": round(bare_rate, 2),
        "bare_seconds": round(bare_elapsed, 3),
        "bare_max_in_flight": bare_max,
        "bare_avg_in_flight": round(bare_avg, 2),
        "bare_time_at_limit": round(bare_at, 3),
        "daemon_images_per_s": round(daemon_rate, 2),
        "daemon_seconds": round(daemon["elapsed"], 3),
        "daemon_requests": daemon_requests,
        "daemon_bad_requests": daemon_bad,
        "daemon_response_formats": daemon_formats,
        "daemon_max_in_flight": daemon_max,
        "daemon_avg_in_flight": round(daemon_avg, 2),
        "daemon_time_at_limit": round(daemon_at, 3),
        "daemon_verdicts": daemon["verdicts"],
        "daemon_cpu_s": round(daemon["cpu_s"], 2),
        "renames_seconds": round(daemon["renames_s"], 4),
        "overhead_pct": round(overhead, 2),
        "overhead_ok": overhead <= TARGET_OVERHEAD,
        "limit_held": daemon_max == concurrency,
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"vision throughput: {args.images} images of {args.side}x{args.side} PNG, server latency "
        f"{args.latency_ms:g} ms, concurrency / max_in_flight {concurrency}, daemon workers {workers}, "
        f"{os.cpu_count()} CPUs"
    )
    rows = [
        ("ideal", ideal, args.images / ideal, concurrency, float(concurrency), 1.0, args.images),
        ("bare", bare_rate, bare_elapsed, bare_max, bare_avg, bare_at, bare_requests),
        ("daemon", daemon_rate, daemon["elapsed"], daemon_max, daemon_avg, daemon_at, daemon_requests),
    ]
    print(f"{'':8} {'images/s':>9} {'seconds':>8} {'max in flight':>14} {'avg in flight':>14} ", end="")
    print(f"{'at limit':>9} {'requests':>9}")
    for name, rate, seconds, peak, average, at_limit, requests in rows:
        print(f"{name:8} {rate:>9.2f} {seconds:>8.2f} {peak:>14} {average:>14.2f} ", end="")
        print(f"{at_limit * 100:>8.1f}% {requests:>9}")
    print(
        f"daemon: verdicts {daemon['verdicts']}, response formats {daemon_formats}, "
        f"CPU {daemon['cpu_s']:.2f} s (incl. startup), renames took {daemon['renames_s'] * 1000:.1f} ms"
    )
    verdict = "ok" if result["overhead_ok"] else "OVER TARGET"
    target = f"(1 - daemon/bare; target <= {TARGET_OVERHEAD:g} %)"
    print(f"overhead        {overhead:>6.2f} %   {target}  {verdict}")
    held = "ok" if result["limit_held"] else ("EXCEEDED" if daemon_max > concurrency else "NOT REACHED")
    print(f"in-flight limit {daemon_max:>6} / {concurrency} (server-observed max under the backlog)  {held}")


if __name__ == "__main__":
    main()
