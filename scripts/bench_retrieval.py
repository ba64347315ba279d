"""See scripts/bench_retrieval."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ragcli.evaluate.beir import load_split, score_rankings
from ragcli.ingest.indexing import reindex
from ragcli.runtimes.embedder import get_embedder
from ragcli.runtimes.reranker import OnnxReranker, passage_text
from ragcli.search.retrieval import (
    BLEND_K,
    Legs,
    deduplicate,
    effective_groups,
    fuse,
    retrieve,
    search_legs,
)
from ragcli.settings import Settings
from ragcli.store.store import Store

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEPTH = 200  # chunks per leg: enough distinct documents for recall@100
PUBLISHED = [("BM25 (BEIR paper)", 0.665, None), ("BM25 flat (Anserini)", 0.679, 0.925),
             ("bge-small-en-v1.5 (MTEB)", 0.713, None), ("bge-base-en-v1.5 (Anserini)", 0.741, None)]
COLUMNS = ("ndcg@10", "recall@10", "mrr@10", "hit@3", "recall@100")


@dataclass(frozen=True)
class Judged:
    label: str
    data: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def judged_sets(scifact: Path, squad: Path) -> list[Judged]:
    """SciFact's test claims, and squad-a's golden questions with a gold paragraph (the questions
    the reranker and the reader never trained on)."""
    test = load_split(scifact, "test")
    golden = [json.loads(line) for line in (squad / "goldens.jsonl").read_text("utf-8").splitlines()
              if line.strip()]
    golden = [g for g in golden if g.get("expected_docs")]
    return [Judged("SciFact test", scifact, test.queries, test.qrels),
            Judged("squad-a goldens", squad, {g["id"]: g["question"] for g in golden},
                   {g["id"]: {d: 1 for d in g["expected_docs"]} for g in golden})]


def bm25(python: str, judged: Judged) -> dict[str, list[str]]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(judged.queries, handle)
    out = subprocess.run([python, str(ROOT / "scripts" / "_bench_bm25.py"),
                          str(judged.data / "corpus.jsonl"), handle.name, "100"],
                         capture_output=True, text=True, check=True)
    Path(handle.name).unlink()
    return json.loads(out.stdout)


def tune_on_train(store: Store, embedder, data: Path) -> None:
    """Fusion weights tuned on SciFact's train split, printed beside the defaults."""
    train = load_split(data, "train")
    public = effective_groups([])
    legs: dict[str, Legs] = {q: search_legs(store, embedder, text, public, DEPTH)
                             for q, text in train.queries.items()}
    grid = []
    for fts_weight in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
        for rrf_k in (5, 10, 20, 40, 60, 100):
            rankings = {q: [h.doc_id for h in deduplicate(fuse(leg, fts_weight=fts_weight,
                                                               rrf_k=rrf_k))]
                        for q, leg in legs.items()}
            grid.append((score_rankings(rankings, train.qrels)["ndcg@10"], fts_weight, rrf_k))
    best, fts_weight, rrf_k = max(grid)
    defaults = Settings()
    print(f"fusion tuned on SciFact train ({len(train.queries)} queries): fts_weight={fts_weight}, "
          f"rrf_k={rrf_k} (train nDCG@10 {best:.3f}); ragcli defaults: "
          f"fts_weight={defaults.fts_weight}, rrf_k={defaults.rrf_k}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Retrieval quality side by side: BM25 (bm25s), "
                                     "ragcli hybrid and hybrid + reranker on SciFact test and "
                                     "squad-a's goldens, through the code path `ragcli ask` uses.")
    parser.add_argument("--scifact", type=Path, default=SHARED / "scifact")
    parser.add_argument("--squad", type=Path, default=SHARED / "squad-a")
    parser.add_argument("--embedder", default=Settings().embedder,
                        help="minilm-onnx (ragcli's default), minilm or minilm-onnx-int8 (one "
                        "store per set and embedder under .ragcli/bench)")
    parser.add_argument("--depths", default="10,20,30",
                        help="reranker depths to measure (the fused candidates it reorders)")
    parser.add_argument("--bm25-python", help="python of the benchmark's venv with bm25s "
                        "(scripts/bench_retrieval makes it); without it no BM25 row")
    parser.add_argument("--weight", type=float, default=0.3,
                        help="rerank_weight of the blended rows (the reranker's ranks against "
                        "fusion's; 1 would repeat the reranker's rows)")
    parser.add_argument("--no-tune", action="store_true", help="skip the fusion grid on SciFact train")
    args = parser.parse_args()
    depths = sorted({int(d) for d in args.depths.split(",")})
    settings = Settings()
    embedder = get_embedder(args.embedder)
    reranker = OnnxReranker(depth=max(depths))
    reranker.load()
    print(f"embedder {args.embedder}: {embedder.id}; reranker {reranker.id} "
          f"(ONNX {reranker.onnx_sha256[:12]})")
    for judged in judged_sets(args.scifact, args.squad):
        store_path = ROOT / ".ragcli" / "bench" / f"{judged.data.name}-{args.embedder}"
        start = time.perf_counter()
        report = reindex([judged.data / "corpus.jsonl"], store_path, embedder)
        store = Store.open(store_path)
        print(f"\nstore {store_path}: {len(store.documents())} documents "
              f"({report.added + report.changed} (re)indexed in {time.perf_counter() - start:.0f} s)")
        if judged.data == args.scifact and not args.no_tune:
            tune_on_train(store, embedder, judged.data)
        rows = []
        if args.bm25_python:
            start = time.perf_counter()
            rankings = bm25(args.bm25_python, judged)
            rows.append(("BM25 (bm25s, defaults, English stopwords)", score_rankings(rankings, judged.qrels),
                         (time.perf_counter() - start) * 1000 / len(judged.queries)))
        hybrid: dict[str, list] = {}
        for label, mode in ((f"ragcli vector-only ({args.embedder})", "vector"),
                            ("ragcli FTS-only (LanceDB BM25)", "fts"), ("ragcli hybrid", "hybrid")):
            start = time.perf_counter()
            found = {q: list(retrieve(store, embedder, text, [], top_k=DEPTH, candidates=DEPTH,
                                      mode=mode, fts_weight=settings.fts_weight,
                                      rrf_k=settings.rrf_k).hits)
                     for q, text in judged.queries.items()}
            per_query = (time.perf_counter() - start) * 1000 / len(judged.queries)
            rows.append((label, score_rankings({q: [h.doc_id for h in hits] for q, hits in found.items()},
                                               judged.qrels), per_query))
            if mode == "hybrid":
                hybrid = found
        # the reranker scores each of the first max(depths) fused hits alone, timed: a depth's
        # order and cost are its first d scores (a pair's score does not depend on the others)
        scored: dict[str, tuple[list[float], list[float]]] = {}
        for q, hits in hybrid.items():
            scores, costs = [], []
            for hit in hits[:max(depths)]:
                start = time.perf_counter()
                scores += reranker.scores(judged.queries[q], [passage_text(hit.title, hit.heading_path,
                                                                           hit.text)])
                costs.append((time.perf_counter() - start) * 1000)
            scored[q] = (scores, costs)
        for depth in depths:
            rankings, blended = {}, {}
            for q, hits in hybrid.items():
                scores = scored[q][0][:depth]
                order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
                rankings[q] = [hits[i].doc_id for i in order] + [h.doc_id for h in hits[depth:]]
                # the reranker's rank and fusion's rank blended (search.retrieval.Blended)
                mixed = {i: (1 - args.weight) / (BLEND_K + i) for i in range(len(scores))}
                for rank, i in enumerate(order):
                    mixed[i] += args.weight / (BLEND_K + rank)
                again = sorted(mixed, key=lambda i: (-mixed[i], i))
                blended[q] = [hits[i].doc_id for i in again] + [h.doc_id for h in hits[depth:]]
            p50 = statistics.median(sum(scored[q][1][:depth]) for q in hybrid)
            rows.append((f"ragcli hybrid + reranker (top {depth})",
                         score_rankings(rankings, judged.qrels), p50))
            rows.append((f"  the same, blended with fusion (w={args.weight})",
                         score_rankings(blended, judged.qrels), p50))
        print(f"{judged.label}, {len(judged.queries)} queries ({judged.data}); ms/query: retrieval "
              "mean, or the reranker's p50 (what it adds)")
        print(f"{'system':<44}" + "".join(f"{c:>11}" for c in COLUMNS) + f"{'ms/query':>10}")
        for label, scores, ms in rows:
            print(f"{label:<44}" + "".join(f"{scores[c]:>11.3f}" for c in COLUMNS) + f"{ms:>10.1f}")
        if judged.data == args.scifact:
            for label, ndcg, recall in PUBLISHED:
                print(f"{label + ' [published]':<44}{ndcg:>11.3f}" + f"{'-':>11}" * 3
                      + f"{(f'{recall:.3f}' if recall else '-'):>11}{'-':>10}")


if __name__ == "__main__":
    main()
