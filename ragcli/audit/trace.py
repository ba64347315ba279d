"""The audit log: one record per request ID, in SQLite (WAL mode, ``synchronous=FULL``).

Why SQLite and not a LanceDB table: the log must outlive a broken or missing store (a failed ask is
recorded too), take concurrent appends from many ``ask`` processes without losing one, survive a
killed process without a half-written record (each write is one transaction), and answer a lookup
by request ID in milliseconds (primary key). SQLite in WAL mode does all four and ships with Python.

A request is written three times: when it starts (:meth:`AuditLog.start`: who asked what, with
which settings, ``status = "started"``), just before generation (:meth:`AuditLog.update`: the
retrieval and the exact prompt) and when it ends (:meth:`AuditLog.complete`). A process killed in
between leaves its record at ``started``; readers report such a record as ``interrupted`` once the
process that wrote it (``pid`` on ``host``) is gone. ``synchronous=FULL`` makes every one of these
writes durable before ``ask`` goes on (the cost is measured in docs/audit.md).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

from ..errors import StoreError
from . import chain

if TYPE_CHECKING:
    from ..settings import Settings

TRACE_FORMAT = 2
"""The audit record's format: 1 = records before ragcli wrote ``format`` (no ``usage``, ``cost``,
``route``, ``attempts``); 2 = those added. :func:`read_trace` reads both; the shape is published
in ``schemas/trace.schema.json`` and every record a test produces is checked against it."""


class RetrievedTrace(TypedDict):
    chunk_id: str
    doc_id: str
    chunk_hash: str
    score: float
    vector_score: float | None
    fts_score: float | None
    flags: list[str]
    rerank_score: NotRequired[float]  # the reranker's, when one reordered the hits


class PromptTrace(TypedDict, total=False):
    text: str  # the exact model input (a served model: the JSON of the messages sent)
    tokens: int
    tokens_estimated: bool  # a served model: ragcli's estimate; the server's count is in usage
    messages: list[list[str]]  # [role, content]
    passages: list[str]  # chunk IDs of passages [1], [2], ...
    dropped: list[str]  # chunk IDs that did not fit the context
    purpose: str  # "span choice" (mode auto)


class ModelTrace(TypedDict, total=False):
    path: str  # a GGUF file ...
    sha256: str
    runtime: str
    adapter: dict[str, str] | None
    sampling: dict[str, Any]
    backend: str  # ... or "openai": a served model (remote.py)
    endpoint: str
    model: str
    api_key_env: str
    api_key_set: bool
    served_model: str
    response_id: str
    system_fingerprint: str
    attempts: int  # HTTP attempts the answer took (1 + retries)


class ReaderTrace(TypedDict):
    """The extractive reader that chose the short answer (runtimes/reader.py)."""

    id: str
    weights_sha256: str  # the shipped weights file (ragcli/runtimes/weights/)
    onnx_sha256: str  # the ONNX file set-up built from it, which ran
    runtime: str


class OutputTrace(TypedDict):
    raw: str
    tokens: int
    finish_reason: str


class ErrorTrace(TypedDict):
    type: str
    message: str
    exit_code: NotRequired[int]


class RouteTrace(TypedDict, total=False):
    policy: str  # small-first | large
    taken: str  # small | large
    escalated: bool
    reason: str | None
    error: str


class UsageTrace(TypedDict, total=False):
    prompt_tokens: int | None
    completion_tokens: int | None
    source: str


class CostTrace(TypedDict):
    cpu_s: float
    wall_ms: float
    tokens: dict[str, int]  # prompt, completion
    by_model: dict[str, UsageTrace]  # small, large
    usd: float


class Trace(TypedDict, total=False):
    """One request's audit record (``schemas/trace.schema.json``): who asked what, with which
    settings; what retrieval returned; the exact prompt and model; the output and the verdict;
    timings and cost. Written by answering.py, read by replay, eval, ``traces`` and render."""

    format: int
    request_id: str
    created_at: str
    user: str
    groups: list[str]
    question: str
    ragcli_version: str
    config_hash: str
    settings: dict[str, Any]
    store: str
    embedder: str
    mode: str
    identity: str
    status: str  # started | answered | refused | failed | interrupted (as read)
    refused: bool
    pid: int
    host: str
    redacted: bool
    index_version: int
    vector_leg: str  # lance | memory (chat, ask --batch): replay searches the same way
    index_generation: str
    acl_filter: str
    effective_groups: list[str]
    confidence: float
    retrieved: list[RetrievedTrace]
    reranker: dict[str, Any]  # search/retrieval.reranker_record: who reordered the hits
    screening: dict[str, dict[str, list[str]]]
    refusal_reason: str
    answer: str
    short_answer: str
    quote: dict[str, Any]
    verification: dict[str, Any]
    citations: list[dict[str, Any]]
    output_checks: list[str]
    prompt: PromptTrace
    model: ModelTrace
    output: OutputTrace
    guardrails: dict[str, Any]
    span_choice: dict[str, Any]
    reader: ReaderTrace
    route: RouteTrace
    attempts: list[dict[str, Any]]  # small-first: each model's attempt (the fields above)
    usage: dict[str, UsageTrace]
    cost: CostTrace
    timings_ms: dict[str, float]
    error: ErrorTrace


def read_trace(data: dict[str, Any]) -> Trace:
    """A stored record as a Trace of the current format: a format-1 record (before ``format``
    was written) is the same shape minus the fields format 2 added, which stay absent (unknown,
    not zero); a record from a newer ragcli is read as it is."""
    if not isinstance(data.get("format"), int):
        data = {**data, "format": 1}
    return cast(Trace, data)


BUSY_TIMEOUT_S = 30
"""How long a write to the audit log waits for another writer."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    request_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    user TEXT,
    status TEXT NOT NULL,
    refused INTEGER NOT NULL,
    record TEXT NOT NULL,
    seq INTEGER,
    prev TEXT,
    link TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traces_created ON traces (created_at);
"""


class AuditLog:
    """The log at ``path``; completed records are sealed into its hash chain (chain.py) with
    ``key`` when one is given (HMAC), else with SHA-256."""

    def __init__(self, path: Path, key: bytes | None = None,
                 key_env: str = "RAGCLI_AUDIT_KEY") -> None:
        self.path = path
        self.signer = chain.Signer(key or None)
        self.key_env = key_env  # where the key came from, for messages
        self.export: Callable[[dict[str, Any]], None] | None = None  # each finished record

    @classmethod
    def of(cls, settings: Settings, env: dict[str, str] | None = None) -> AuditLog:
        """The log the settings name, keyed by the variable ``audit_key_env`` names (if set)."""
        value = (os.environ if env is None else env).get(settings.audit_key_env, "")
        log = cls(settings.audit, value.encode() or None, settings.audit_key_env)
        if settings.otlp_endpoint:
            from . import telemetry

            log.export = telemetry.live(settings.otlp_endpoint, timeout=settings.otlp_timeout,
                                        content=settings.otlp_content).submit
        return log

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not self.path.exists()
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            if fresh:
                os.chmod(self.path, 0o600)
            # a new log being set up by several writers at once (concurrent asks, the workers
            # of ask --batch): SQLite answers "database is locked" at once, without waiting,
            # to one that changes the journal mode or upgrades its lock meanwhile; try again
            deadline = time.monotonic() + BUSY_TIMEOUT_S
            while True:
                try:
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.execute("PRAGMA synchronous=FULL")
                    connection.executescript(_SCHEMA + chain.CHAIN_SCHEMA)
                    chain.migrate(connection)
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        connection.close()
                        raise
                    time.sleep(0.01)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open audit log {self.path}: {exc}") from None
        return connection

    def append(self, record: dict[str, Any]) -> None:
        """Write one record in one transaction (a finished one sealed into the chain); an
        existing request ID is never overwritten."""
        row = _row(record)
        with closing(self._connect()) as connection:
            if record["status"] == STARTED:
                connection.execute(
                    "INSERT INTO traces (request_id, created_at, user, status, refused, record) "
                    "VALUES (?, ?, ?, ?, ?, ?)", row)
            else:
                _sealing(connection, lambda: chain.seal_row(connection, self.signer, row,
                                                            update=False))
        if record["status"] != STARTED and self.export is not None:
            self.export(record)

    def start(self, record: dict[str, Any]) -> None:
        """Write the record of a request that is starting (``status = "started"``)."""
        self.append({**record, "status": STARTED, "pid": os.getpid(), "host": socket.gethostname()})

    def update(self, record: dict[str, Any], *, final: bool = False) -> None:
        """Replace a started record with what is known now; ``final`` completes it (its status is
        the record's own). A completed record is never changed again."""
        data = record if final else {**record, "status": STARTED}
        data = {**data, "pid": os.getpid(), "host": socket.gethostname()}
        row = _row(data)
        request_id, created_at, user, status, refused, text = row
        with closing(self._connect()) as connection:
            if final:
                changed = _sealing(connection, lambda: chain.seal_row(
                    connection, self.signer, row, update=True))
            else:
                changed = connection.execute(
                    "UPDATE traces SET status = ?, refused = ?, record = ? "
                    "WHERE request_id = ? AND status = ?",
                    (status, refused, text, request_id, STARTED)).rowcount > 0
        if not changed:
            raise StoreError(f"audit record {request_id} is not open for writing")
        if final and self.export is not None:
            self.export(data)

    def complete(self, record: dict[str, Any]) -> None:
        self.update(record, final=True)

    def get(self, request_id: str) -> Trace | None:
        if not self.path.exists():
            return None
        with closing(self._connect()) as connection:
            row = connection.execute("SELECT record FROM traces WHERE request_id = ?",
                                     (request_id,)).fetchone()
        return None if row is None else _reading(json.loads(row[0]))

    def require(self, request_id: str) -> Trace:
        """The record of ``request_id``; TraceNotFoundError (exit 11) when there is none."""
        from ..errors import TraceNotFoundError

        record = self.get(request_id)
        if record is None:
            raise TraceNotFoundError(f"no audit record {request_id} in {self.path}")
        return record

    def verify(self) -> chain.ChainReport:
        """Walk the whole hash chain (``traces verify``): the report names the first problem."""
        with closing(self._existing()) as connection:
            return self._keyed(lambda: chain.verify(connection, self.signer))

    def verified(self, request_id: str) -> tuple[Trace, str]:
        """The record of ``request_id`` and its place in the chain, ``sealed`` or ``legacy``
        (written before the chain) or ``unsealed`` (never completed), after checking its seal
        and its links to its neighbours (replay's check); AuditTamperedError when they fail."""
        from ..errors import AuditTamperedError

        record = self.require(request_id)
        with closing(self._connect()) as connection:
            state = self._keyed(lambda: chain.check_one(connection, self.signer, request_id))
        if isinstance(state, chain.Problem):
            raise AuditTamperedError(f"audit log {self.path}: {state.message}",
                                     hint="`ragcli traces verify` checks the whole log")
        return record, state

    def prune(self, cutoff: str, keep: set[str], *, dry_run: bool = False) -> chain.Pruned:
        """Remove records created before ``cutoff`` (ISO-8601) but ``keep``, leaving a sealed
        checkpoint; the whole chain is verified first, and a broken one is not pruned."""
        from datetime import UTC, datetime

        from ..errors import AuditTamperedError

        report = self.verify()
        if report.problem is not None:
            raise AuditTamperedError(f"audit log {self.path}: {report.problem.message}; "
                                     "nothing was pruned")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with closing(self._existing()) as connection:
            connection.execute("PRAGMA secure_delete = ON")  # removed records leave no trace
            return chain.prune(connection, self.signer, cutoff, keep, now, dry_run=dry_run)

    def _existing(self) -> sqlite3.Connection:
        from ..errors import TraceNotFoundError

        if not self.path.exists():
            raise TraceNotFoundError(f"no audit log at {self.path}")
        return self._connect()

    def _keyed(self, work: Callable[[], Any]) -> Any:
        from ..errors import ConfigError

        try:
            return work()
        except chain.KeyNeeded as exc:
            raise ConfigError(f"audit log {self.path} is sealed with key {exc.key_id}: set "
                              f"{self.key_env} to that key to verify it") from None

    def recent(self, limit: int | None = 20, *, user: str | None = None,
               since: str | None = None, status: str | None = None) -> Iterator[Trace]:
        """Newest first; ``since`` is an ISO-8601 time, ``status`` answered|refused|failed|started
        (``started`` also finds interrupted ones)."""
        if not self.path.exists():
            return
        where, params = [], []
        for clause, value in (("user = ?", user), ("created_at >= ?", since),
                              ("status = ?", status)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT record FROM traces"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, request_id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with closing(self._connect()) as connection:
            rows = connection.execute(sql, params).fetchall()
        for (record,) in rows:
            yield _reading(json.loads(record))


STARTED = "started"
INTERRUPTED = "interrupted"


def _sealing(connection: sqlite3.Connection, seal: Callable[[], bool]) -> bool:
    """Run ``seal`` (chain.seal_row) in one IMMEDIATE transaction: the writers of one log seal
    one after another, each after the head the one before left."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        done = seal()
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return done


def _row(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["request_id"], record["created_at"], record.get("user"), record["status"],
            int(bool(record.get("refused"))), json.dumps(record, sort_keys=True, ensure_ascii=False))


def _reading(record: dict[str, Any]) -> Trace:
    """The stored record as a Trace (:func:`read_trace`); a started record whose process is gone
    is reported as interrupted (nothing is written)."""
    if record.get("status") == STARTED and record.get("host") == socket.gethostname() \
            and not _alive(record.get("pid")):
        record = {**record, "status": INTERRUPTED}
    return read_trace(record)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def daily_stats(records: Iterator[Trace] | list[Trace]) -> list[dict[str, Any]]:
    """``traces stats``: per UTC day (oldest first), requests, how they ended, escalations to the
    large model, tokens, CPU seconds, USD and total-latency percentiles (nearest rank)."""
    days: dict[str, list[Trace]] = {}
    for record in records:
        days.setdefault(str(record.get("created_at", ""))[:10], []).append(record)
    rows = []
    for day in sorted(days):
        group = days[day]
        latency = sorted(float((r.get("timings_ms") or {}).get("total", 0.0)) for r in group
                         if r.get("status") not in (STARTED, INTERRUPTED))
        costs: list[dict[str, Any]] = [dict(r["cost"]) if "cost" in r else {} for r in group]
        tokens = [c.get("tokens") or {} for c in costs]
        routes = [r.get("route") or {} for r in group]
        rows.append({
            "day": day,
            "requests": len(group),
            "answered": sum(r.get("status") == "answered" for r in group),
            "refused": sum(r.get("status") == "refused" for r in group),
            "failed": sum(r.get("status") == "failed" for r in group),
            "interrupted": sum(r.get("status") in (STARTED, INTERRUPTED) for r in group),
            "escalated": sum(bool(r.get("escalated")) for r in routes),
            "answered_by_large": sum(r.get("taken") == "large" for r in routes),
            "prompt_tokens": sum(int(t.get("prompt") or 0) for t in tokens),
            "completion_tokens": sum(int(t.get("completion") or 0) for t in tokens),
            "cpu_s": round(sum(float(c.get("cpu_s") or 0.0) for c in costs), 3),
            "usd": round(sum(float(c.get("usd") or 0.0) for c in costs), 6),
            "latency_p50_ms": round(percentile(latency, 0.50), 1),
            "latency_p95_ms": round(percentile(latency, 0.95), 1),
            "latency_max_ms": round(latency[-1], 1) if latency else 0.0,
        })
    return rows


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0.5 = median) of ``values``; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
