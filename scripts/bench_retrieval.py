"""See scripts/bench_retrieval."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ragcli.evaluate.beir import load_split, score_rankings
from ragcli.ingest.indexing import reindex
from ragcli.runtimes.embedder import get_embedder
from ragcli.search.retrieval import Legs, deduplicate, effective_groups, fuse, retrieve, search_legs
from ragcli.settings import Settings
from ragcli.store.store import Store

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "scifact"
DEPTH = 200  # chunks per leg: enough distinct documents for recall@100
PUBLISHED = [("BM25 (BEIR paper)", 0.665, None), ("BM25 flat (Anserini)", 0.679, 0.925),
             ("bge-small-en-v1.5 (MTEB)", 0.713, None), ("bge-base-en-v1.5 (Anserini)", 0.741, None)]


def main() -> None:
    parser = argparse.ArgumentParser(description="Retrieval quality on BEIR SciFact through the "
                                     "code path `ragcli ask` uses (tuned on train, reported on test).")
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT,
                        help="a BEIR directory (default: ../shared/data/scifact)")
    parser.add_argument("--embedder", default="minilm", help="minilm, minilm-onnx or "
                        "minilm-onnx-int8 (one store per embedder under .ragcli/bench)")
    args = parser.parse_args()
    name, data = args.embedder, args.data
    train, test = load_split(data, "train"), load_split(data, "test")
    embedder = get_embedder(name)
    embedder.recent_texts = 0  # type: ignore[attr-defined]  # each configuration embeds afresh
    print(f"embedder {name}: {embedder.id}")
    store_path = ROOT / ".ragcli" / "bench" / (data.name if name == "minilm" else f"{data.name}-{name}")
    start = time.perf_counter()
    report = reindex([train.corpus], store_path, embedder)
    print(f"store {store_path}: {len(Store.open(store_path).documents())} documents "
          f"({report.added + report.changed} (re)indexed in {time.perf_counter() - start:.0f} s)")
    store = Store.open(store_path)
    public = effective_groups([])

    # tune the fusion on the train split, from legs fetched once per query
    legs: dict[str, Legs] = {q: search_legs(store, embedder, text, public, DEPTH)
                             for q, text in train.queries.items()}
    grid = []
    for fts_weight in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
        for rrf_k in (5, 10, 20, 40, 60, 100):
            rankings = {q: [h.doc_id for h in deduplicate(fuse(leg, fts_weight=fts_weight,
                                                               rrf_k=rrf_k))]
                        for q, leg in legs.items()}
            grid.append((score_rankings(rankings, train.qrels)["ndcg@10"], fts_weight, rrf_k))
    best_train, fts_weight, rrf_k = max(grid)
    defaults = Settings()
    print(f"tuned on train ({len(train.queries)} queries): fts_weight={fts_weight}, rrf_k={rrf_k} "
          f"(train nDCG@10 {best_train:.3f}); ragcli defaults: fts_weight={defaults.fts_weight}, "
          f"rrf_k={defaults.rrf_k}")

    rows = []
    for label, mode, weight, k in ((f"ragcli vector-only ({name})", "vector", 1.0, 60),
                                   ("ragcli FTS-only (LanceDB BM25)", "fts", 1.0, 60),
                                   ("ragcli hybrid, defaults", "hybrid", defaults.fts_weight,
                                    defaults.rrf_k),
                                   ("ragcli hybrid, tuned on train", "hybrid", fts_weight, rrf_k)):
        start = time.perf_counter()
        rankings = {q: [h.doc_id for h in retrieve(store, embedder, text, [], top_k=DEPTH,
                                                   candidates=DEPTH, mode=mode, fts_weight=weight,
                                                   rrf_k=k).hits]
                    for q, text in test.queries.items()}
        per_query = (time.perf_counter() - start) * 1000 / len(test.queries)
        rows.append((label, score_rankings(rankings, test.qrels), per_query))

    print(f"\nSciFact test split, {len(test.queries)} queries ({data})")
    print(f"{'system':<42}{'nDCG@10':>9}{'R@100':>8}{'MRR@10':>8}{'ms/query':>10}")
    for label, scores, ms in rows:
        print(f"{label:<42}{scores['ndcg@10']:>9.3f}{scores['recall@100']:>8.3f}"
              f"{scores['mrr@10']:>8.3f}{ms:>10.1f}")
    for label, ndcg, recall in PUBLISHED:
        print(f"{label + ' [published]':<42}{ndcg:>9.3f}{(f'{recall:.3f}' if recall else '-'):>8}"
              f"{'-':>8}{'-':>10}")


if __name__ == "__main__":
    main()
