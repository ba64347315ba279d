"""Collectors on 127.0.0.1 for the tests and benchmarks: a small OTLP/HTTP receiver that decodes
what ragcli sends with the OpenTelemetry protobuf definitions (what every collector does first)
and keeps the spans, told to answer slowly or with an error if wanted (a real collector does when
overloaded); Arize Phoenix started as a process (:func:`start_phoenix`); ports, free or closed."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def closed_url() -> str:
    """The URL of a port nothing listens on (bound, then let go): a collector that is down."""
    return f"http://127.0.0.1:{free_port()}"


def start_server(command: list[str], probe: str, log: Path, *, env: dict[str, str] | None = None,
                 timeout: float = 180) -> subprocess.Popen[bytes]:
    """Start ``command`` (its output in ``log``) and wait until ``probe`` answers (any HTTP
    status: a server that wants a key answers 401); RuntimeError with the end of the log when it
    exits first or ``timeout`` seconds pass."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(probe, timeout=2).close()  # noqa: S310 - 127.0.0.1
            return proc
        except urllib.error.HTTPError:  # it answered
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{command[0]} did not start: "
                                   + log.read_text(errors="replace")[-2000:]) from None
            time.sleep(0.5)


def start_phoenix(executable: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``phoenix serve`` on 127.0.0.1 with its data in ``work``, once it answers; its URL."""
    port = free_port()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(work), "PHOENIX_HOST": "127.0.0.1",
           "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(free_port()),
           "PHOENIX_TELEMETRY_ENABLED": "false"}
    url = f"http://127.0.0.1:{port}"
    proc = start_server([str(executable), "serve"], url + "/healthz", work / "phoenix.log",
                        env=env)
    return proc, url


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class Receiver:
    def __init__(self, *, delay: float = 0.0, status: int = 200) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self.delay, self.status = delay, status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceRequest,
                )

                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                time.sleep(receiver.delay)
                if self.path == "/v1/traces" and receiver.status == 200:
                    request = ExportTraceServiceRequest.FromString(body)
                    for resource in request.resource_spans:
                        service = {a.key: _value(a.value) for a in resource.resource.attributes}
                        for scope in resource.scope_spans:
                            for span in scope.spans:
                                receiver.spans.append({
                                    "name": span.name, "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent_id": span.parent_span_id.hex(),
                                    "start": span.start_time_unix_nano,
                                    "end": span.end_time_unix_nano,
                                    "status": span.status.code,
                                    "attributes": {a.key: _value(a.value)
                                                   for a in span.attributes},
                                    "events": [e.name for e in span.events],
                                    "service": service})
                code = receiver.status if self.path == "/v1/traces" else 404
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
