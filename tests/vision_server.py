"""A model server process for the endpoint pool tests: the OpenAI wire protocol on 127.0.0.1.

Run `python tests/vision_server.py --port 0 --delay 0.05`: it prints `PORT <n>` once listening, answers
GET /v1/models (["llava"]) and POST /v1/chat/completions (a sensitive verdict, after `--delay` seconds,
whatever response_format is asked; with `--status 500` an error of that status instead; with
`--no-json-schema` a 400 for a json_schema response_format, as servers without it answer), and GET /stats
({"chats": n, "max_in_flight": m}) for the test.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERDICT = {
    "contains_sensitive": True,
    "categories": ["payment_card"],
    "confidence": 0.9,
    "description": "a card",
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restarted server takes its old port back at once

    def __init__(self, port: int, delay: float, status: int, no_json_schema: bool) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.delay = delay
        self.status = status
        self.no_json_schema = no_json_schema
        self.lock = threading.Lock()
        self.chats = 0
        self.in_flight = 0
        self.max_in_flight = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: with Nagle on, the body waits for the client's delayed ACK
    # (~40 ms), a latency on top of --delay (the cluster benchmark times a fixed 200 ms).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, payload: Any, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send({"object": "list", "data": [{"id": "llava", "object": "model", "owned_by": "t"}]})
        elif self.path == "/stats":
            with self.server.lock:
                self._send({"chats": self.server.chats, "max_in_flight": self.server.max_in_flight})
        else:
            self._send({"error": {"message": "not found"}}, 404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        asked = (body.get("response_format") or {}).get("type")
        if not self.path.endswith("/chat/completions"):
            self._send({"error": {"message": "not found"}}, 404)
            return
        server = self.server
        with server.lock:
            server.chats += 1
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            time.sleep(server.delay)
            if server.status != 200:
                self._send({"error": {"message": "CUDA error: out of memory"}}, server.status)
                return
            if server.no_json_schema and asked == "json_schema":
                self._send({"error": {"message": "response_format json_schema is not supported"}}, 400)
                return
            message = {"role": "assistant", "content": json.dumps(VERDICT)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            self._send(
                {"id": "c", "object": "chat.completion", "created": 0, "model": "llava", "choices": [choice]}
            )
        finally:
            with server.lock:
                server.in_flight -= 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--no-json-schema", action="store_true")
    options = parser.parse_args()
    server = _Server(options.port, options.delay, options.status, options.no_json_schema)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
