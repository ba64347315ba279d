"""Question -> ranked Hits, with permissions applied inside both search legs.

Hybrid retrieval: a vector leg (cosine over MiniLM embeddings) and a full-text leg (LanceDB native
BM25), each prefiltered by the user's groups, fused by weighted reciprocal rank fusion
(``Settings.rrf_k`` 10 and ``fts_weight`` 0.75 by default, tuned on SciFact train).

Confidence, the measure behind refusal, is the best *evidence* among the top-k passages the user may
read (0 when nothing is readable). The evidence of a passage is

    0.5 * cosine(question, passage) + 0.5 * coverage(question terms, passage)

where coverage is the fraction of the question's content terms (stemmed, stop words removed; see
text.py) found in the passage with its title and heading path. Cosine alone cannot tell "Who is the
CEO of Kestrel?" (0.48, unanswerable) from "What port does the local API listen on?" (0.43,
answerable); term coverage can, because a question about something absent names a thing that no
readable passage mentions. Below ``Settings.min_confidence`` ragcli refuses without calling the model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from ..errors import ConfigError, UsageError
from ..models import GROUP_NAME, PUBLIC_GROUP, Hit
from ..runtimes.embedder import Embedder
from ..store.store import Store
from ..store.table import acl_filter
from ..text import content_terms, coverage
from .screening import visible

if TYPE_CHECKING:
    from ..settings import Settings


@dataclass(frozen=True)
class Retrieval:
    hits: tuple[Hit, ...]
    confidence: float
    groups: tuple[str, ...]
    acl_filter: str
    version: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    vector_leg: str = "lance"  # memory | lance (Legs.vector_leg)
    reranker: dict[str, Any] | None = None  # reranker_record: who reordered the hits, if any


def effective_groups(groups: Sequence[str]) -> tuple[str, ...]:
    """The groups a request may read: its own plus the public group, sorted and unique.

    A name that no document's ACL could hold (``models.GROUP_NAME``) is a UsageError: a request
    from ``ask``, ``eval`` or a replayed record never gets as far as the search with it."""
    for group in groups:
        if group and not GROUP_NAME.match(group):
            raise UsageError(f"invalid group name {group!r}: letters, digits and _ . @ - only, "
                             "at most 64")
    return tuple(sorted({PUBLIC_GROUP, *(g for g in groups if g)}))


def _hit(row: dict[str, Any], score: float, vector_score: float | None,
         fts_score: float | None) -> Hit:
    return Hit(row["chunk_id"], row["doc_id"], row["source"], row["title"], row["heading_path"],
               row["text"], row["chunk_hash"], tuple(row["acl"]), score, vector_score, fts_score,
               corpus=row.get("corpus") or "")


def evidence(question: str, hit: Hit) -> float:
    """How well one passage covers the question (see the module docstring)."""
    terms = content_terms(question)
    passage = f"{hit.title} {hit.heading_path} {visible(hit.text)}"
    return 0.5 * max(hit.vector_score or 0.0, 0.0) + 0.5 * coverage(terms, passage)


@dataclass(frozen=True)
class Legs:
    """What the two search legs returned for one question (both already ACL-prefiltered).

    The rows of a local store are ids only (``Store.lazy_rows``): ``fetch`` reads the columns of
    the few hits retrieval keeps, ``vectors`` the vectors of hits only the full-text leg found.
    With the store's vectors held in memory (``Store.hold_vectors``), ``similarities`` holds
    every row's cosine to the question instead."""

    query_vector: Any
    vector_rows: list[dict[str, Any]]
    fts_rows: list[dict[str, Any]]
    timings_ms: dict[str, float]
    similarities: Any = None
    offsets: dict[str, int] | None = None
    fetch: Callable[[Sequence[str]], dict[str, dict[str, Any]]] | None = None
    vectors: Callable[[Sequence[str]], dict[str, Any]] | None = None

    @property
    def vector_leg(self) -> str:
        """memory | lance: which path searched the vectors (audit records keep it for replay)."""
        return "memory" if self.similarities is not None else "lance"


_FTS_POOL: Any = None  # threads for the full-text leg, made on first use (under _FTS_MAKING)
_FTS_THREADS = 4  # one per concurrent retrieval (ask --batch's workers); one caller uses one
_FTS_MAKING = threading.Lock()


def _fts_pool() -> Any:
    global _FTS_POOL
    with _FTS_MAKING:
        if _FTS_POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _FTS_POOL = ThreadPoolExecutor(max_workers=_FTS_THREADS,
                                           thread_name_prefix="ragcli-fts")
    return _FTS_POOL


def search_legs(store: Store, embedder: Embedder, question: str, allowed: Sequence[str],
                candidates: int, mode: str = "hybrid") -> Legs:
    """Both legs, each under the ACL prefilter. In hybrid mode the full-text leg runs on a
    second thread while the question is embedded and the vector leg searched (LanceDB's searches
    release the GIL): the legs are independent, so the rows are the same as one after the other,
    and a warm retrieval costs about the slower leg instead of their sum."""
    timings: dict[str, float] = {}
    held = store.held
    lazy = held is None and store.lazy_rows

    def fts() -> list[dict[str, Any]]:
        start = time.perf_counter()
        rows = store.search_fts(question, allowed, candidates, ids_only=held is not None or lazy)
        timings["fts_search"] = (time.perf_counter() - start) * 1000
        return rows

    pending = _fts_pool().submit(fts) if mode == "hybrid" else None
    start = time.perf_counter()
    query_vector = embedder.embed([question])[0]
    timings["embed"] = (time.perf_counter() - start) * 1000
    vector_rows: list[dict[str, Any]] = []
    fts_rows: list[dict[str, Any]] = []
    similarities = None
    try:
        if held is not None:
            start = time.perf_counter()
            similarities = held.similarities(query_vector, allowed)
            if mode in ("hybrid", "vector"):
                vector_rows = [{"chunk_id": held.chunk_ids[offset]} for offset, _ in
                               held.nearest(similarities, allowed, candidates)]
            timings["vector_search"] = (time.perf_counter() - start) * 1000
        elif mode in ("hybrid", "vector"):
            start = time.perf_counter()
            vector_rows = store.search_vector(query_vector, allowed, candidates, ids_only=lazy)
            timings["vector_search"] = (time.perf_counter() - start) * 1000
    finally:
        if pending is not None:
            fts_rows = pending.result()  # its error, if any, is raised here
    if mode == "fts":
        fts_rows = fts()
    if held is None and lazy:
        row_ids = {r["chunk_id"]: r["_rowid"] for r in fts_rows + vector_rows}

        def fetch(chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
            return {r["chunk_id"]: r for r in store.take_rows([row_ids[c] for c in chunk_ids])}

        def vectors(chunk_ids: Sequence[str]) -> dict[str, Any]:
            return {r["chunk_id"]: r["vector"]
                    for r in store.take_rows([row_ids[c] for c in chunk_ids], vectors=True)}

        return Legs(query_vector, vector_rows, fts_rows, timings, fetch=fetch, vectors=vectors)
    if held is None:
        return Legs(query_vector, vector_rows, fts_rows, timings)
    return Legs(query_vector, vector_rows, fts_rows, timings, similarities, held.offsets,
                store.fetch)


def fuse(legs: Legs, *, fts_weight: float, rrf_k: int, keep: int | None = None) -> list[Hit]:
    """Weighted reciprocal rank fusion of the two legs: score = 1/(k + rank_vector) +
    fts_weight/(k + rank_fts). Every hit gets its cosine similarity to the question.

    ``keep``: the caller needs only the best ``keep`` hits of distinct text; with ids-only rows
    the columns of the hits below those are never read (the list ends there)."""
    import numpy as np

    scores: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    bm25: dict[str, float] = {}
    for rank, row in enumerate(legs.vector_rows):
        scores[row["chunk_id"]] = scores.get(row["chunk_id"], 0.0) + 1.0 / (rrf_k + rank + 1)
        rows[row["chunk_id"]] = row
    for rank, row in enumerate(legs.fts_rows):
        scores[row["chunk_id"]] = (scores.get(row["chunk_id"], 0.0)
                                   + fts_weight / (rrf_k + rank + 1))
        rows.setdefault(row["chunk_id"], row)  # a vector row keeps its exact _distance
        bm25[row["chunk_id"]] = float(row["_score"])
    query = np.asarray(legs.query_vector, dtype=np.float32)
    if legs.similarities is None and legs.vectors is not None:  # ids-only rows, through lance
        unscored = [c for c in scores if "_distance" not in rows[c] and "vector" not in rows[c]]
        found = legs.vectors(unscored)  # found by the full-text leg only, its vector read now
        rows.update({c: {**rows[c], "vector": found[c]} for c in unscored})
    cosines: dict[str, float] = {}
    for chunk_id in scores:
        row = rows[chunk_id]
        if legs.similarities is not None and legs.offsets is not None:  # held: the same product
            cosines[chunk_id] = float(legs.similarities[legs.offsets[chunk_id]])
        elif "_distance" in row:  # the vector leg's exact cosine distance
            cosines[chunk_id] = 1.0 - float(row["_distance"])
        else:  # found by the full-text leg only: its vector came with it or was read above
            cosines[chunk_id] = float(np.asarray(row["vector"], dtype=np.float32) @ query)
    order = sorted(scores, key=lambda c: (-scores[c], -cosines[c], c))
    if legs.fetch is not None:  # ids only: the columns of the hits needed, a page at a time
        texts: set[str] = set()
        done = 0
        while done < len(order) and (keep is None or len(texts) < keep):
            page = order[done:] if keep is None else order[done:done + keep - len(texts) + 4]
            rows.update(legs.fetch([c for c in page if "text" not in rows[c]]))
            texts.update(_same_text(rows[c]["text"]) for c in page)
            done += len(page)
        order = order[:done]
    return [_hit(rows[c], scores[c], cosines[c], bm25.get(c)) for c in order]


def _same_text(text: str) -> str:
    """What two passages share when ``deduplicate`` counts them as one."""
    return " ".join(text.split()).lower()


def deduplicate(hits: Sequence[Hit]) -> list[Hit]:
    """Drop hits whose text repeats a better-ranked one (the same passage in two documents)."""
    seen: set[str] = set()
    kept = []
    for hit in hits:
        key = _same_text(hit.text)
        if key not in seen:
            seen.add(key)
            kept.append(hit)
    return kept


Reranker = Callable[[str, list[Hit]], list[Hit]]
OFF = ("", "none")


def load_reranker(spec: str | None, depth: int = 20, weight: float = 1.0) -> Reranker | None:
    """The reranker ``spec`` names: None or ``none`` (off: fusion's order), one trained here
    (``minilm``: runtimes/reranker.py, reordering the best ``depth`` hits), or ``module:function``
    taking (question, hits) and returning the hits reordered (or fewer); with ``weight`` below 1
    its order is blended with fusion's (:class:`Blended`)."""
    import importlib

    if spec is None or spec.strip().lower() in OFF:
        return None
    if ":" not in spec:
        from ..runtimes.reranker import get_reranker

        found = cast(Reranker, get_reranker(spec.strip(), depth))
    else:
        module_name, _, attribute = spec.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"reranker {spec!r} cannot be loaded: {exc}") from None
        if not callable(found):
            raise ConfigError(f"reranker {spec!r} is not callable")
    return found if weight >= 1.0 else Blended(found, weight)


BLEND_K = 10  # the reciprocal-rank constant of Blended (as fusion's rrf_k)


class Blended:
    """A reranker's order blended with fusion's: each hit it returns scores
    ``(1 - weight) / (BLEND_K + fusion rank) + weight / (BLEND_K + reranker rank)`` (ranks from 0;
    ties keep fusion's order). ``weight`` 1 is the reranker's order, 0 fusion's. Ranks, not scores:
    the reranker's scale does not matter, and the arithmetic is the same on every CPU."""

    def __init__(self, reranker: Reranker, weight: float) -> None:
        self.reranker, self.weight = reranker, weight

    def __call__(self, question: str, hits: Sequence[Hit]) -> list[Hit]:
        fused = {h.chunk_id: i for i, h in enumerate(hits)}
        reranked = list(self.reranker(question, list(hits)))
        score = {h.chunk_id: (1 - self.weight) / (BLEND_K + fused.get(h.chunk_id, len(hits)))
                 + self.weight / (BLEND_K + i) for i, h in enumerate(reranked)}
        return sorted(reranked, key=lambda h: (-score[h.chunk_id], fused.get(h.chunk_id, len(hits))))

    def record(self) -> dict[str, Any]:
        return {**(reranker_record(self.reranker) or {}), "weight": self.weight}


def reranker_record(reranker: Reranker | None) -> dict[str, Any] | None:
    """What an audit record says of the reranker: a shipped one's files (by hash), a user's
    function by name; None when fusion's order stood."""
    if reranker is None:
        return None
    record = getattr(reranker, "record", None)
    if callable(record):
        return cast(dict[str, Any], record())
    return {"id": f"{getattr(reranker, '__module__', '?')}:{getattr(reranker, '__qualname__', '?')}"}


def retrieve(store: Store, embedder: Embedder, question: str, groups: Sequence[str], *,
             top_k: int, candidates: int, mode: str, fts_weight: float, rrf_k: int,
             reranker: Reranker | None = None) -> Retrieval:
    """Run the legs under the ACL prefilter, fuse, deduplicate, rerank, keep ``top_k``."""
    allowed = effective_groups(groups)
    legs = search_legs(store, embedder, question, allowed, candidates, mode)
    hits = deduplicate(fuse(legs, fts_weight=fts_weight, rrf_k=rrf_k,
                            keep=None if reranker is not None else top_k))
    timings = dict(legs.timings_ms)
    if reranker is not None:
        start = time.perf_counter()
        hits = list(reranker(question, hits[:candidates]))
        timings["rerank"] = (time.perf_counter() - start) * 1000
    hits = [replace(h, evidence=evidence(question, h)) for h in hits[:top_k]]
    confidence = max((h.evidence for h in hits), default=0.0)
    return Retrieval(tuple(hits), confidence, allowed, acl_filter(allowed), store.version, timings,
                     legs.vector_leg, reranker_record(reranker))


def retrieve_configured(store: Store, embedder: Embedder, question: str, groups: Sequence[str],
                        settings: Settings) -> Retrieval:
    """``retrieve`` with everything ``settings`` say: what ask, replay and eval all run."""
    return retrieve(store, embedder, question, groups, top_k=settings.top_k,
                    candidates=settings.candidates, mode=settings.retrieval,
                    fts_weight=settings.fts_weight, rrf_k=settings.rrf_k,
                    reranker=load_reranker(settings.reranker, settings.rerank_depth,
                                           settings.rerank_weight))
