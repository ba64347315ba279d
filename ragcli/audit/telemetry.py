"""Audit records as OpenTelemetry traces, with OpenInference's attribute names (Phoenix, Jaeger,
Grafana Tempo, Datadog: any OTLP/HTTP receiver).

One request is one trace, and its trace ID *is* its request ID (a UUIDv7's 128 bits), so a backend
finds a request by the ID ``ask`` printed; span IDs are derived from the request ID and the span's
name, so exporting a record twice sends the same spans. The spans are made from the finished
audit record, both live (:class:`LiveExport`, behind the ``otlp_endpoint`` setting) and after
the fact (``ragcli traces export --otlp URL``): what a backend shows is exactly what the record
holds. Durations are the record's ``timings_ms``; where stages ran is reconstructed from them (the
full-text leg beside embedding and the vector leg, the reader or model after retrieval).

Exported by default: request ID, user, groups, mode, status, exit code, store version, chunk IDs
and scores, model and reader names with file hashes, token counts, sampling parameters, the claim
check's outcome and the refusal reason. Never exported unless ``otlp_content`` is on: the
question, the answer and passage text (passage text is never exported: chunk IDs only). A record
written with ``redact_audit`` holds hashes in place of those, and so does what is exported.

The OpenTelemetry SDK and OTLP exporter are the optional extra ``ragcli[otel]``, imported only
when something is exported (``ragcli --help`` stays instant).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import queue
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

OTLP_TRACES_PATH = "/v1/traces"
QUEUE_SIZE = 256
"""Records waiting for live export at most; more are dropped (and counted), never waited for."""
GATHER_S = 0.5
"""Live export waits this long after a record for more to send with it (one request for many:
a third of the CPU a record costs when sent alone), unless the process is ending."""

CHAIN, RETRIEVER, RERANKER, EMBEDDING, LLM = "CHAIN", "RETRIEVER", "RERANKER", "EMBEDDING", "LLM"
_WAKE = object()  # put on the queue by flush: a worker gathering records stops waiting


class ExportError(Exception):
    """The collector cannot be reached or did not take the spans."""


@dataclass
class SpanSpec:
    """One span, before any OpenTelemetry import: what :func:`spans` makes of a record."""

    name: str
    kind: str  # the OpenInference span kind
    span_id: int
    parent_id: int | None
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    error: str | None = None


def traces_url(endpoint: str) -> str:
    """An OTLP/HTTP base URL (``http://127.0.0.1:6006``) as its traces URL (``.../v1/traces``);
    a URL already ending in ``/v1/traces`` is kept."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(OTLP_TRACES_PATH) else endpoint + OTLP_TRACES_PATH


def trace_id(request_id: str) -> int:
    try:
        return uuid.UUID(request_id).int or 1
    except ValueError:  # not a UUID (a record written by hand): a stable ID all the same
        return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:16], "big") or 1


def span_id(request_id: str, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{request_id}/{name}".encode()).digest()[:8], "big") or 1


def _ns(created_at: str) -> int:
    return int(datetime.fromisoformat(created_at).timestamp() * 1e9)


def _documents(prefix: str, hits: Iterable[tuple[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, (chunk_id, score) in enumerate(hits):
        out[f"{prefix}.{i}.document.id"] = chunk_id
        out[f"{prefix}.{i}.document.score"] = float(score)
    return out


def spans(record: Mapping[str, Any], *, content: bool = False) -> list[SpanSpec]:
    """The spans of one finished audit record (a started or interrupted one has no end: the
    callers send finished ones only). A leg's span holds the kept hits that leg found, with its
    own scores: the record keeps the fused top k, not each leg's whole candidate list."""
    request_id = str(record["request_id"])
    timings = {k: float(v) for k, v in (record.get("timings_ms") or {}).items()}
    begin = _ns(str(record["created_at"]))
    total = timings.get("total", 0.0)
    root_id = span_id(request_id, "ask")

    def at(ms: float) -> int:
        return begin + int(ms * 1e6)

    def child(name: str, kind: str, start_ms: float, ms: float, parent: int = root_id,
              **attributes: Any) -> SpanSpec:
        spec = SpanSpec(name, kind, span_id(request_id, name), parent, at(start_ms),
                        at(start_ms + ms), {"openinference.span.kind": kind, **attributes})
        out.append(spec)
        return spec

    error = record.get("error") or {}
    root = SpanSpec("ask", CHAIN, root_id, None, begin, at(total), {
        "openinference.span.kind": CHAIN,
        "ragcli.request_id": request_id,
        "user.id": str(record.get("user") or ""),
        "ragcli.groups": [str(g) for g in record.get("groups") or []],
        "ragcli.status": str(record.get("status", "")),
        "ragcli.exit_code": int(error.get("exit_code", 0) if error else 0),
        "ragcli.mode": str(record.get("mode", "")),
        "ragcli.version": str(record.get("ragcli_version", "")),
        "ragcli.config_hash": str(record.get("config_hash", "")),
    })
    if record.get("index_version") is not None:
        root.attributes["ragcli.index_version"] = int(record["index_version"])
    if content:
        root.attributes["input.value"] = str(record.get("question", ""))
        if record.get("answer") is not None:
            root.attributes["output.value"] = str(record["answer"])
    if error:
        root.error = str(error.get("type", "error")) + (f": {error.get('message')}" if content
                                                         else "")
    out = [root]
    retrieved = list(record.get("retrieved") or [])
    if "retrieve" in timings:
        fused = child("retrieve", RETRIEVER, 0.0, timings["retrieve"], **_documents(
            "retrieval.documents", ((h["chunk_id"], h["score"]) for h in retrieved)))
        fused.attributes["ragcli.retrieval"] = str((record.get("settings") or {}).get(
            "retrieval", ""))
        embed = timings.get("embed", 0.0)
        child("embed", EMBEDDING, 0.0, embed, fused.span_id,
              **{"embedding.model_name": str(record.get("embedder", ""))})
        for leg, start, key in (("vector", embed, "vector_score"), ("fts", 0.0, "fts_score")):
            if f"{leg}_search" in timings:
                hits = sorted(((h["chunk_id"], h[key]) for h in retrieved if h.get(key) is not None),
                              key=lambda pair: -pair[1])
                child(f"retrieve.{leg}", RETRIEVER, start, timings[f"{leg}_search"],
                      fused.span_id, **_documents("retrieval.documents", hits))
        reranker = record.get("reranker")
        if reranker and "rerank" in timings:
            reordered = [(h["chunk_id"], h["rerank_score"]) for h in retrieved
                         if "rerank_score" in h]
            child("rerank", RERANKER, timings["retrieve"] - timings["rerank"], timings["rerank"],
                  fused.span_id, **{"reranker.model_name": str(reranker.get("id", "")),
                                    "ragcli.reranker.sha256": str(reranker.get("weights_sha256",
                                                                               "")),
                                    **_documents("reranker.output_documents", reordered)})
    clock = timings.get("retrieve", 0.0)
    for stage in ("read", "extract", "span", "prompt", "generate"):
        if stage not in timings:
            continue
        spec = child(stage, LLM if stage in ("read", "span", "generate") else CHAIN, clock,
                     timings[stage])
        clock += timings[stage]
        if stage == "read" and record.get("reader"):
            reader = record["reader"]
            spec.attributes.update({"llm.model_name": str(reader.get("id", "")),
                                    "ragcli.reader.weights_sha256": str(reader.get(
                                        "weights_sha256", "")),
                                    "ragcli.reader.onnx_sha256": str(reader.get("onnx_sha256", ""))})
        elif stage in ("span", "generate"):
            _model_attributes(spec, record)
    _decisions(root, record, at(total))
    return out


def _model_attributes(spec: SpanSpec, record: Mapping[str, Any]) -> None:
    model = record.get("model") or {}
    name = str(model.get("model") or str(model.get("path", "")).rsplit("/", 1)[-1])
    spec.attributes.update({"llm.model_name": name, "ragcli.model.sha256": str(model.get(
        "sha256", ""))})
    if model.get("sampling"):
        spec.attributes["llm.invocation_parameters"] = json.dumps(model["sampling"],
                                                                  sort_keys=True)
    usages = list((record.get("usage") or {}).values())
    prompt = sum(int(u.get("prompt_tokens") or 0) for u in usages)
    completion = sum(int(u.get("completion_tokens") or 0) for u in usages)
    if usages:
        spec.attributes.update({"llm.token_count.prompt": prompt,
                                "llm.token_count.completion": completion,
                                "llm.token_count.total": prompt + completion})


def _decisions(root: SpanSpec, record: Mapping[str, Any], end_ns: int) -> None:
    """The claim check and the refusal decision, as events at the end of the request."""
    verification = record.get("verification") or {}
    if verification:
        root.events.append(("claim_check", end_ns, {
            "outcome": str(verification.get("outcome", "")),
            "source": str(verification.get("source", "")),
            "failed": [str(f) for f in verification.get("failed") or []]}))
    if record.get("output_checks"):
        root.events.append(("output_checks", end_ns,
                            {"failed": [str(c) for c in record["output_checks"]]}))
    if record.get("refused"):
        root.events.append(("refusal", end_ns,
                            {"reason": str(record.get("refusal_reason", ""))}))
    if record.get("confidence") is not None:
        root.attributes["ragcli.confidence"] = float(record["confidence"])


def reachable(url: str, timeout: float) -> str | None:
    """None when something listens at ``url``'s host and port, else why not (a refused
    connection answers at once: a collector that is down costs no waiting)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
    except OSError as exc:
        return f"{parts.hostname}:{port}: {exc.strerror or exc}"
    return None


class Sender:
    """Sends records to one OTLP/HTTP receiver, one request per call, re-using its connection.
    Raises ExportError (with the reason) when the receiver cannot be reached or refuses them."""

    def __init__(self, endpoint: str, *, timeout: float, content: bool = False) -> None:
        self.url, self.timeout, self.content = traces_url(endpoint), timeout, content
        self.exporter: Any = None

    def send(self, records: Sequence[Mapping[str, Any]]) -> int:
        """The number of spans sent."""
        down = reachable(self.url, self.timeout)
        if down:
            raise ExportError(f"cannot reach the OTLP receiver {self.url}: {down}")
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import SpanExportResult
        except ImportError:
            raise ExportError("OpenTelemetry export needs the extra: pip install 'ragcli[otel]'"
                              ) from None
        if self.exporter is None:
            self.exporter = OTLPSpanExporter(endpoint=self.url, timeout=self.timeout)
        readable = [span for record in records for span in _readable(record, self.content)]
        if self.exporter.export(readable) is not SpanExportResult.SUCCESS:
            raise ExportError(f"the OTLP receiver {self.url} did not take the spans")
        return len(readable)

    def close(self) -> None:
        if self.exporter is not None:
            self.exporter.shutdown()
            self.exporter = None


def _readable(record: Mapping[str, Any], content: bool) -> list[Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    from .. import __version__

    # the constructor, not Resource.create: that runs detectors on a thread pool, which fails
    # once the interpreter is shutting down (where a one-shot ask's last export runs)
    resource = Resource({"service.name": "ragcli", "service.version": __version__,
                         "telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry"})
    scope = InstrumentationScope("ragcli", __version__)
    trace = trace_id(str(record["request_id"]))

    def context(span: int) -> SpanContext:
        return SpanContext(trace, span, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))

    out = []
    for spec in spans(record, content=content):
        out.append(ReadableSpan(
            spec.name, context(spec.span_id),
            None if spec.parent_id is None else context(spec.parent_id), resource,
            spec.attributes, [Event(name, attributes, timestamp) for name, timestamp, attributes
                              in spec.events],
            kind=SpanKind.SERVER if spec.parent_id is None else SpanKind.INTERNAL,
            status=Status(StatusCode.ERROR, spec.error) if spec.error else Status(StatusCode.OK),
            start_time=spec.start_ns, end_time=spec.end_ns, instrumentation_scope=scope))
    return out


class LiveExport:
    """Export each finished record while answering, on a daemon thread behind a bounded queue:
    ``submit`` never waits (a full queue drops the record and counts it), a collector that is
    down or slow costs the answer nothing, and at exit the process waits for what is queued at
    most ``timeout`` seconds (a refused connection ends it at once). A failure is one line on
    stderr, once per process; the audit record is written either way."""

    def __init__(self, endpoint: str, *, timeout: float, content: bool) -> None:
        self.timeout = timeout
        self.sender = Sender(endpoint, timeout=timeout, content=content)
        self.queue: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        self.dropped = 0  # records the full queue turned away (said once on stderr)
        self.warned = False
        self.idle = threading.Condition()
        self.pending = 0
        self.ending = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ragcli-otlp", daemon=True)
        self.thread.start()
        atexit.register(self.flush)

    def submit(self, record: Mapping[str, Any]) -> None:
        with self.idle:
            try:
                self.queue.put_nowait(record)
            except queue.Full:
                self.dropped += 1
                self._warn(f"{QUEUE_SIZE} records already waiting: this one is not exported")
                return
            self.pending += 1

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until what was submitted is sent (or given up), at most ``timeout`` seconds
        (default: the export timeout); whether it all went."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self.ending.set()  # send what is gathered now: wake the worker if it is gathering
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(_WAKE)
        with self.idle:
            while self.pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.idle.wait(left)
        return True

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is _WAKE:
                continue
            batch = [first]
            gather = time.monotonic() + GATHER_S
            while len(batch) < 64:
                wait = 0.0 if self.ending.is_set() else gather - time.monotonic()
                try:
                    item = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _WAKE:
                    batch.append(item)
            try:
                self.sender.send(batch)
            except Exception as exc:  # noqa: BLE001 - export must never fail an answer
                self._warn(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            finally:
                with self.idle:
                    self.pending -= len(batch)
                    self.idle.notify_all()

    def _warn(self, reason: str) -> None:
        if not self.warned:
            self.warned = True
            sys.stderr.write(f"ragcli: warning: OpenTelemetry export failed ({reason}); the "
                             "audit record is written (ragcli traces export --otlp sends it "
                             "later)\n")
            sys.stderr.flush()


_LIVE: dict[tuple[str, float, bool], LiveExport] = {}
_LIVE_LOCK = threading.Lock()


def live(endpoint: str, *, timeout: float, content: bool) -> LiveExport:
    """The process's live exporter for these settings (one thread per endpoint)."""
    key = (endpoint, timeout, content)
    with _LIVE_LOCK:
        if key not in _LIVE:
            _LIVE[key] = LiveExport(endpoint, timeout=timeout, content=content)
        return _LIVE[key]
