"""A scripted OpenAI-compatible server on 127.0.0.1, for the failures a real server gives only by
accident: garbage, a cut stream, a stall, 401, 503. (tests/test_routing.py also runs the real
llama-cpp-python server.) It answers like tests/fakes.EchoGenerator: the first sentence of
passage [1], cited, streamed word by word."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Stub:
    """``behaviour``: ok | garbage | not-json | cut | slow | 401 | 503 | 503-once | 400 |
    no-usage."""

    def __init__(self) -> None:
        self.behaviour = "ok"
        self.requests: list[dict[str, Any]] = []
        self.stall_s = 5.0
        self.reply: str | None = None  # a fixed answer instead of the echo
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "headers": dict(self.headers),
                                      "body": body})
                stub.answer(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def text_for(self, body: dict[str, Any]) -> str:
        if self.reply is not None:
            return self.reply
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        match = re.search(r'\[1\] [^\n]*\n"""\n(.*?)\n"""', user, re.S)
        first = match.group(1).split(". ")[0].rstrip(".") if match else "nothing"
        return f"{first}. [1]"

    def answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        kind = self.behaviour
        if kind == "503-once":  # busy for this request, fine for the next
            kind, self.behaviour = "503", "ok"
        if kind in ("401", "503", "400"):
            said = f"stub says {kind}"
            if kind == "401":  # as careless servers do: quote the credentials it refused
                said += f" for {handler.headers.get('Authorization', 'no key')}"
            payload = json.dumps({"error": {"message": said}}).encode()
            handler.send_response(int(kind))
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        if kind == "slow":
            time.sleep(self.stall_s)
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        if kind == "garbage":
            handler.wfile.write(b"data: {this is not json\n\n")
            handler.wfile.flush()
            return
        if kind == "not-json":
            handler.wfile.write(b'data: ["a list, not a chunk"]\n\n')
            handler.wfile.flush()
            return
        words = self.text_for(body).split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            self.event(handler, {"id": "stub-1", "model": "stub-large", "choices": [
                {"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            if kind == "cut" and i == 1:
                handler.wfile.flush()
                handler.close_connection = True
                return  # the connection closes without a finish_reason
        self.event(handler, {"id": "stub-1", "model": "stub-large", "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if kind != "no-usage":
            self.event(handler, {"id": "stub-1", "model": "stub-large", "choices": [],
                                 "usage": {"prompt_tokens": 123, "completion_tokens": len(words),
                                           "total_tokens": 123 + len(words)}})
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()

    @staticmethod
    def event(handler: BaseHTTPRequestHandler, data: dict[str, Any]) -> None:
        handler.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        handler.wfile.flush()
