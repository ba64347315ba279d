"""The vector index at scale: recall@10 against the flat scan and warm retrieval latency, with the
ACL prefilter, at 100 k chunks (real SciFact text and vectors) and 1 M chunks (synthetic).

Usage: bench_ann.py [BEIR_DIR] [--sizes 100000,1000000] [--work DIR] [--queries 300]

Chunks: every run of 1, 2 and 3 consecutive sentences of the SciFact abstracts (about 140 k real
passages) embedded by the configured embedder; a size above that takes the real vectors with
Gaussian noise (cosine to their original about 0.86) and their texts with the words shuffled,
which keeps the cluster structure a real corpus has. Each chunk is readable by ``public`` (30 %)
or by one of eight teams; every query asks as ``team1`` (about 39 % of the rows readable), so the
ACL prefilter is inside every search. The store is written through ragcli's own schema and indexed
by ``Store.refresh_indices`` (the FTS, ACL and vector indices that ingest builds); queries are the
SciFact test claims through ``retrieve_configured`` (what ``ask`` runs). Flat = the same search
without the vector index. At a size a warm process holds in memory (``HOLD_MAX_ROWS``), the same
claims also go through a store holding its vectors (what ``chat`` and ``ask --batch`` do), each
claim through both in turn, with the hold's time, memory and recall; then once more through the
held store alone, one claim after another, as a chat process runs them (no lance query between
two held ones). Prints one JSON line per
size.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "scifact"
TEAMS = 8
USER_GROUPS = ["team1"]
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")


def passages(beir: Path) -> list[tuple[str, str, str]]:
    """(doc_id, title, text) of every 1-, 2- and 3-sentence window of every abstract."""
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    with (beir / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            sentences = [s for s in _SENTENCE.split(doc.get("text", "")) if len(s.split()) >= 4]
            for width in (1, 2, 3):
                for start in range(0, max(len(sentences) - width + 1, 0)):
                    text = " ".join(sentences[start:start + width])
                    if text not in seen:
                        seen.add(text)
                        out.append((str(doc["_id"]), doc.get("title", ""), text))
    return out


def real_vectors(beir: Path, work: Path, embedder) -> tuple[list[tuple[str, str, str]], np.ndarray]:
    pieces = passages(beir)
    cache = work / f"vectors-{len(pieces)}-{embedder.id.replace('/', '_')}.npy"
    if cache.exists():
        return pieces, np.load(cache)
    start = time.perf_counter()
    vectors = np.concatenate([embedder.embed([f"{t}\n{x}" for _, t, x in pieces[i:i + 4096]])
                              for i in range(0, len(pieces), 4096)])
    print(json.dumps({"embedded": len(pieces), "seconds": round(time.perf_counter() - start, 1)}),
          flush=True)
    np.save(cache, vectors)
    return pieces, vectors


def build_store(path: Path, size: int, pieces: list[tuple[str, str, str]], vectors: np.ndarray,
                embedder_id: str) -> tuple[object, dict[str, float]]:
    import pyarrow as pa

    from ragcli.store.store import Store
    from ragcli.store.table import _schema

    rng = np.random.default_rng(0)
    store = Store.open_or_create(path, embedder_id, vectors.shape[1])
    real = len(pieces)
    now = time.time()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with store.writer_lock():
        table = store.table(create=True)
        for lo in range(0, size, 100_000):
            idx = np.arange(lo, min(lo + 100_000, size))
            src = idx % real
            batch_vectors = vectors[src].astype(np.float32)
            synthetic = idx >= real
            if synthetic.any():
                noisy = batch_vectors[synthetic] + rng.normal(0, 0.03, (synthetic.sum(), vectors.shape[1]))
                batch_vectors[synthetic] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
            texts = []
            for i, s in zip(idx, src, strict=True):
                text = pieces[s][2]
                if i >= real:
                    words = text.split()
                    rng.shuffle(words)
                    text = " ".join(words)
                texts.append(text)
            acl = [["public"] if (i * 7919) % 10 < 3 else [f"team{(i * 31) % TEAMS}"] for i in idx]
            data = pa.table({
                "chunk_id": [f"c{i}" for i in idx], "doc_id": [pieces[s][0] for s in src],
                "ordinal": pa.array(idx % 1000, pa.int32()),
                "source": [f"scifact/{pieces[s][0]}" for s in src],
                "root": ["bench"] * len(idx), "title": [pieces[s][1] for s in src],
                "heading_path": [""] * len(idx), "text": texts,
                "search_text": [f"{pieces[s][1]}\n{t}" for s, t in zip(src, texts, strict=True)],
                "chunk_hash": [f"h{i}" for i in idx], "doc_hash": [f"d{s}" for s in src],
                "acl": acl, "pages": [[] for _ in idx], "mtime": [now] * len(idx),
                "indexed_at": pa.array([int(now * 1e6)] * len(idx), pa.timestamp("us", tz="UTC")),
                "run_id": ["bench"] * len(idx), "embedder": [embedder_id] * len(idx),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(batch_vectors.ravel()),
                                                           vectors.shape[1]),
                "corpus": ["bench"] * len(idx), "doc_key": [f"bench:{i}" for i in idx],
            }, schema=_schema(vectors.shape[1]))
            table.add(data)
        timings["write_s"] = time.perf_counter() - start
        start = time.perf_counter()
        store.refresh_indices()
        timings["index_s"] = time.perf_counter() - start
    return Store.open(path), timings


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(int(len(ordered) * 0.95) - 1, 0)]


def measure(store, embedder, questions: list[str], settings) -> dict[str, float]:
    from ragcli.search.retrieval import effective_groups, retrieve_configured
    from ragcli.store.held import HOLD_MAX_ROWS

    allowed = effective_groups(USER_GROUPS)
    qvectors = embedder.embed(questions)
    for question in questions[:20]:  # warm: open the dataset, load the indices into the cache
        retrieve_configured(store, embedder, question, USER_GROUPS, settings)
        store.search_vector(qvectors[0], allowed, 10, exact=True)
    recalls, recalls50, ann, flat = [], [], [], []
    for vector in qvectors:
        start = time.perf_counter()
        exact = store.search_vector(vector, allowed, settings.candidates, exact=True)
        flat.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        approx = store.search_vector(vector, allowed, settings.candidates)
        ann.append((time.perf_counter() - start) * 1000)
        truth = [r["chunk_id"] for r in exact]
        got = [r["chunk_id"] for r in approx]
        recalls.append(len(set(truth[:10]) & set(got[:10])) / max(len(truth[:10]), 1))
        recalls50.append(len(set(truth) & set(got)) / max(len(truth), 1))
        assert all(set(r["acl"]) & set(allowed) for r in approx), "a row outside the ACL"
    hybrid, held_hybrid, held_recalls = [], [], []
    held, hold = None, {}
    if store.count_chunks() <= HOLD_MAX_ROWS:  # what chat and ask --batch do at this size
        from ragcli.store.store import Store

        held = Store.open(store.path)
        _ = held.version  # the dataset open is not part of holding
        rss = rss_mb()
        start = time.perf_counter()
        held.hold_vectors()
        hold = {"hold_s": time.perf_counter() - start, "hold_rss_mb": rss_mb() - rss}
        for question in questions[:20]:
            retrieve_configured(held, embedder, question, USER_GROUPS, settings)
        for vector in qvectors:
            exact = store.search_vector(vector, allowed, 10, exact=True)
            mine = held.held.nearest(held.held.similarities(vector, allowed), allowed, 10)
            truth = {r["chunk_id"] for r in exact}
            held_recalls.append(len(truth & {held.held.chunk_ids[n] for n, _ in mine})
                                / max(len(truth), 1))
    parts: dict[str, list[float]] = {}
    for question in questions:  # side by side: each question through both
        start = time.perf_counter()
        found = retrieve_configured(store, embedder, question, USER_GROUPS, settings)
        hybrid.append((time.perf_counter() - start) * 1000)
        for part in ("embed", "vector_search", "fts_search"):
            parts.setdefault(part, []).append(found.timings_ms.get(part, 0.0))
        if held is not None:
            start = time.perf_counter()
            retrieve_configured(held, embedder, question, USER_GROUPS, settings)
            held_hybrid.append((time.perf_counter() - start) * 1000)
    held_alone: list[float] = []
    if held is not None:  # and as a chat process runs them: held retrieval only, no lance
        for question in questions:  # query in between (which evicts the caches it uses)
            start = time.perf_counter()
            retrieve_configured(held, embedder, question, USER_GROUPS, settings)
            held_alone.append((time.perf_counter() - start) * 1000)
    ann_p50, ann_p95 = percentiles(ann)
    flat_p50, flat_p95 = percentiles(flat)
    hyb_p50, hyb_p95 = percentiles(hybrid)
    out = {"recall_at_10": statistics.mean(recalls), "recall_at_candidates": statistics.mean(recalls50),
           "vector_leg_ann_p50_ms": ann_p50, "vector_leg_ann_p95_ms": ann_p95,
           "vector_leg_flat_p50_ms": flat_p50, "vector_leg_flat_p95_ms": flat_p95,
           "hybrid_p50_ms": hyb_p50, "hybrid_p95_ms": hyb_p95,
           # its parts (the full-text leg runs beside the other two)
           **{f"hybrid_{part}_p50_p95_ms": [round(x, 1) for x in percentiles(values)]
              for part, values in parts.items()}}
    if held is not None:
        held_p50, held_p95 = percentiles(held_hybrid)
        alone_p50, alone_p95 = percentiles(held_alone)
        out.update({"held_recall_at_10": statistics.mean(held_recalls),
                    "held_hybrid_p50_ms": held_p50, "held_hybrid_p95_ms": held_p95,
                    "held_alone_p50_ms": alone_p50, "held_alone_p95_ms": alone_p95, **hold})
    return out


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT, help="BEIR directory")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--work", type=Path, default=None, help="keeps vectors and stores")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--index", default=None, choices=["IVF_PQ", "IVF_HNSW_SQ"],
                        help="the index type to build instead of ragcli's (ragcli.store.indices.ANN_TYPE)")
    args = parser.parse_args()
    from ragcli.store import indices as store_module

    if args.index:
        store_module.ANN_TYPE = args.index
    from ragcli.evaluate.beir import load_split
    from ragcli.runtimes.embedder import get_embedder
    from ragcli.settings import load_settings

    work = args.work or Path(tempfile.mkdtemp(prefix="ragcli-ann-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = load_settings({}, environ={}, cwd=work)
    embedder = get_embedder(settings.embedder)
    # every query embedded afresh: a claim goes through several stores and loops, and a kept
    # vector (ragcli/runtimes/embedder.py) would time only the first of them
    embedder.recent_texts = 0  # type: ignore[attr-defined]
    pieces, vectors = real_vectors(args.data, work, embedder)
    questions = list(load_split(args.data, "test").queries.values())[:args.queries]
    for size in (int(s) for s in args.sizes.split(",")):
        path = work / f"store-{size}-{store_module.ANN_TYPE}"
        from ragcli.store.store import Store

        if Store.exists(path):
            store, timings = Store.open(path), {}
        else:
            store, timings = build_store(path, size, pieces, vectors, embedder.id)
        result = {"chunks": size, "real": min(size, len(pieces)), "queries": len(questions),
                  "index": store.vector_index(), **timings,
                  **measure(store, embedder, questions, settings)}
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in result.items()}), flush=True)


if __name__ == "__main__":
    main()
