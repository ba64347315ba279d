"""``--engine ray``: chunking and embedding as Ray Data stages; the store keeps one writer.

The driver (the ``ragcli ingest``/``reindex`` process) reads the sources and diffs them against the
store exactly as the local engine does (``indexing.py``): what counts as added, changed, ACL-only
changed or deleted does not depend on the engine. Only the documents to (re)index go to Ray:

    documents --map_batches(_chunk, tasks)--> one row per chunk
              --map_batches(_Embedder, actor pool)--> the same rows with their vectors

Each embedding actor loads the model once (``concurrency`` actors, ``num_cpus`` each, onnxruntime
held to that many threads). A chunk whose hash the store already holds for its document keeps
the stored vector, so an ACL-only change embeds nothing here either. Results stream back to the
driver, which commits whole documents through ``Store.replace_documents``: the same single writer,
lock, provenance columns and version semantics as the local engine, so both engines produce the
same chunk ids, hashes and vectors. A worker that dies is restarted by Ray and its batch retried
(Ray Data's actor-pool defaults: unlimited restarts and task retries); rows are deduplicated by
chunk id and a document is written only once all of its chunks have arrived.

``ray`` is an optional dependency (``pip install 'ragcli[ray]'``) and is imported only here.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import EngineError, InputError, first_line
from ..models import Chunk, Document

# Environment a worker needs to find the same model files as the driver.
_WORKER_ENV = ("RAGCLI_MODEL_CACHE", "XDG_CACHE_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
               "HF_HUB_DISABLE_TELEMETRY")
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt): ")
DOCS_PER_TASK = 64  # documents per chunking task
CHUNKS_PER_TASK = 512  # chunks per embedding call on an actor


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (ray without its data extra cannot run the pipeline)
    except ImportError:
        raise InputError("--engine ray needs Ray, which is not installed",
                         hint="pip install 'ragcli[ray]' (or: pip install 'ray[data]')") from None
    return ray


@functools.lru_cache(maxsize=4)
def _tokenizing_embedder(name: str) -> Any:
    """Per worker process: the embedder whose tokenizer sizes the chunks (its model never loads)."""
    from ..runtimes.embedder import get_embedder

    return get_embedder(name)


def _chunk(batch: dict[str, Any], embedder_name: str) -> dict[str, list[Any]]:
    """Ray Data stage 1, a plain task: documents -> one row per chunk."""
    from .indexing import chunk_documents

    embedder = _tokenizing_embedder(embedder_name)
    out: dict[str, list[Any]] = {"doc_id": [], "n_chunks": [], "chunk": []}
    for blob in batch["document"]:
        document: Document = pickle.loads(blob)
        chunks = chunk_documents([document], embedder)
        each: list[Chunk | None] = list(chunks) or [None]
        for chunk in each:  # a document without chunks still reports in
            out["doc_id"].append(document.doc_key)  # what identifies it in the store
            out["n_chunks"].append(len(chunks))
            out["chunk"].append(pickle.dumps(chunk))
    return out


class _Embedder:
    """Ray Data stage 2, a stateful actor: loads the embedder once, embeds what the store lacks."""

    embedder_name = ""  # these are set by _stage()
    threads = 1
    stored: frozenset[tuple[str, str]] = frozenset()
    after_batch: Callable[[], None] | None = None  # RayEngine(after_batch=...): see there

    def __init__(self) -> None:
        from ..runtimes.embedder import get_embedder

        self.embedder = get_embedder(self.embedder_name)
        if hasattr(self.embedder, "threads"):
            self.embedder.threads = self.threads

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        chunks: list[Chunk | None] = [pickle.loads(b) for b in batch["chunk"]]
        vectors = np.full((len(chunks), self.embedder.dim), np.nan, dtype=np.float32)
        todo = [i for i, c in enumerate(chunks)
                if c is not None and (c.doc_key, c.chunk_hash) not in self.stored]
        if todo:
            vectors[todo] = self.embedder.embed([chunks[i].search_text for i in todo])  # type: ignore[union-attr]
        if self.after_batch is not None:
            self.after_batch()
        return {"doc_id": batch["doc_id"], "n_chunks": batch["n_chunks"], "chunk": batch["chunk"],
                "vector": vectors, "embedded": np.isin(np.arange(len(chunks)), todo)}


def _stage(base: type, **attributes: Any) -> type:
    """A subclass carrying its settings as class attributes: Ray ships it with the class (actor
    constructor arguments would sit in the object store, which Ray warns breaks actor restarts)."""
    return type(base.__name__, (base,), attributes)


class RayEngine:
    """Runs the chunk and embed stages on a Ray cluster (a local one unless ``address``)."""

    def __init__(self, address: str | None = None, workers: int | None = None,
                 batch_chunks: int = CHUNKS_PER_TASK,
                 after_batch: Callable[[], None] | None = None) -> None:
        """``after_batch`` runs in the embedding actor after each batch it embeds: the seam the
        tests inject faults through (a worker that kills its own process); nothing in the CLI or
        the environment reaches it."""
        self.after_batch = after_batch
        self.ray = import_ray()
        self.address = address
        self.workers = workers
        self.batch_chunks = batch_chunks
        self._started = False

    def __enter__(self) -> RayEngine:
        return self  # Ray starts on the first documents to index: a no-op reindex does not wait for it

    def _start(self) -> None:
        import logging
        import warnings

        for name in ("ray", "ray.data"):  # Ray's info lines and warnings are not ragcli's output
            logging.getLogger(name).setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", message="lancedb fork support")  # fork+exec of raylet
        warnings.filterwarnings("ignore", module="ray")
        ray = self.ray
        if not ray.is_initialized():
            from ..cpu import usable_cores

            try:
                if self.address:
                    ray.init(address=self.address, configure_logging=False, log_to_driver=False)
                else:
                    ray.init(num_cpus=usable_cores(limit=os.cpu_count() or 1),
                             include_dashboard=False, configure_logging=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f" at {self.address}" if self.address else ""
                raise InputError(f"cannot start or reach Ray{where}: {first_line(exc, 200)}",
                                 hint="check --ray-address (ray://HOST:10001 or HOST:6379), or "
                                      "leave it out for a local Ray") from None
            self._started = True
        context = self.ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.verbose_stats_logs = False

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self.ray.shutdown()

    def prepare(self, documents: Sequence[Document], embedder: Any,
                reusable: Callable[[Sequence[str]], dict[tuple[str, str], Any]],
                batch_documents: int) -> Iterator[tuple[list[Document], list[Chunk], Any, int]]:
        """Yield (documents, their chunks, vectors, newly embedded) per commit of whole documents."""
        import numpy as np

        if not documents:
            return
        self._start()
        embedder_name, dim = getattr(embedder, "name", None), embedder.dim
        if not embedder_name:
            raise InputError(f"embedder {embedder.id} cannot be built on a Ray worker",
                             hint="use a registered embedder (the 'embedder' setting)")
        # the actors need to know which chunks the store already has (keys only, read in
        # commit-sized pieces); the vectors themselves are read again per commit, in _commit
        ids = [d.doc_key for d in documents]
        stored = frozenset(key for start in range(0, len(ids), batch_documents)
                           for key in reusable(ids[start:start + batch_documents]))
        ray = self.ray
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = self.workers or max(1, cpus)
        env = {k: os.environ[k] for k in _WORKER_ENV if os.environ.get(k)}
        remote = {"runtime_env": {"env_vars": env}} if env else {}
        dataset = ray.data.from_items([{"document": pickle.dumps(d)} for d in documents],
                                      override_num_blocks=max(1, -(-len(documents) // DOCS_PER_TASK)))
        pool = ray.data.ActorPoolStrategy
        chunked = dataset.map_batches(_chunk, fn_kwargs={"embedder_name": embedder_name},
                                      batch_size=DOCS_PER_TASK, num_cpus=0.5, batch_format="numpy",
                                      **remote)
        embedded = chunked.map_batches(
            _stage(_Embedder, embedder_name=embedder_name, threads=1, stored=stored,
                   after_batch=staticmethod(self.after_batch) if self.after_batch else None),
            batch_size=self.batch_chunks, compute=pool(min_size=1, max_size=workers), num_cpus=1,
            batch_format="numpy", **remote)
        by_id = {d.doc_key: d for d in documents}
        pending: dict[str, dict[str, tuple[Chunk, Any, bool]]] = {}
        done: set[str] = set()
        ready: list[str] = []
        for batch in self._batches(embedded):
            for doc_id, n_chunks, blob, vector, fresh in zip(
                    batch["doc_id"], batch["n_chunks"], batch["chunk"], batch["vector"],
                    batch["embedded"], strict=True):
                doc_id = str(doc_id)
                if doc_id in done:
                    continue  # a retried task's rows for a document already complete
                parts = pending.setdefault(doc_id, {})
                chunk = pickle.loads(blob)
                if chunk is not None:
                    parts[chunk.chunk_id] = (chunk, vector, bool(fresh))
                if len(parts) == int(n_chunks):
                    done.add(doc_id)
                    ready.append(doc_id)
            while len(ready) >= batch_documents:
                yield self._commit(ready[:batch_documents], pending, by_id, reusable, dim, np)
                del ready[:batch_documents]
        if ready:
            yield self._commit(ready, pending, by_id, reusable, dim, np)
        lost = set(by_id) - done
        if lost:  # never silently: a partial run must not look complete
            raise EngineError(f"Ray returned no or partial results for {len(lost)} documents "
                              f"(e.g. {sorted(lost)[0]}); the documents written so far are kept",
                              hint="run the same command again: it continues where this stopped")

    def _batches(self, dataset: Any) -> Iterator[dict[str, Any]]:
        """The pipeline's output blocks; a failure Ray gave up on is one line, exit 17."""
        try:
            yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
        except self.ray.exceptions.RayError as exc:
            # the remote traceback is in the text: name the worker's own error, not Ray's wrapper
            lines = [ln.strip() for ln in str(exc).splitlines()]
            causes = [ln for ln in lines if _ERROR_LINE.match(ln) and not ln.startswith("ray.")]
            first = next((ln for ln in lines if ln), type(exc).__name__)
            raise EngineError(f"the Ray pipeline failed: {(causes[0] if causes else first)[:300]}",
                              hint="the documents committed before are kept; fix the cause and run "
                                   "the same command again (Ray's logs: /tmp/ray/session_latest/logs)"
                              ) from None

    @staticmethod
    def _commit(doc_ids: list[str], pending: dict[str, dict[str, tuple[Chunk, Any, bool]]],
                by_id: dict[str, Document],
                reusable: Callable[[Sequence[str]], dict[tuple[str, str], Any]], dim: int,
                np: Any) -> tuple[list[Document], list[Chunk], Any, int]:
        stored = reusable([d for d in doc_ids if any(not e for _, _, e in pending[d].values())])
        chunks: list[Chunk] = []
        rows: list[Any] = []
        fresh = 0
        for doc_id in doc_ids:
            parts = pending.pop(doc_id)
            for chunk, vector, embedded in sorted(parts.values(), key=lambda p: p[0].ordinal):
                chunks.append(chunk)
                rows.append(vector if embedded else stored[(chunk.doc_key, chunk.chunk_hash)])
                fresh += embedded
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(chunks), dim)
        return [by_id[d] for d in doc_ids], chunks, vectors, fresh
