"""Read BEIR-layout data (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) and score retrieval."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from .metrics import hit_at_k, mrr_at_k, ndcg_at_k, recall_at_k, unique

if TYPE_CHECKING:
    from ..settings import Settings


@dataclass(frozen=True)
class BeirSplit:
    corpus: Path
    queries: dict[str, str]  # query id -> text, only those judged in the split
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade}


def load_split(root: Path, split: str) -> BeirSplit:
    corpus, queries_file, qrels_file = (root / "corpus.jsonl", root / "queries.jsonl",
                                        root / "qrels" / f"{split}.tsv")
    for path in (corpus, queries_file, qrels_file):
        if not path.is_file():
            raise InputError(f"not a BEIR directory: {path} is missing")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(qrels_file.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("\t")
        if number == 1 and not parts[-1].strip().lstrip("-").isdigit():
            continue  # header row
        if len(parts) < 3:
            raise InputError(f"{qrels_file}:{number}: expected query-id, corpus-id, score")
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries: dict[str, str] = {}
    for line in queries_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                queries[str(row["_id"])] = str(row["text"])
    return BeirSplit(corpus, queries, qrels)


def score_rankings(rankings: Mapping[str, Sequence[str]],
                   qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, recall@10 and @100, MRR@10 and hit@3 over the judged queries (missing =
    empty ranking)."""
    totals = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0, "hit@3": 0.0}
    for query_id, relevant in qrels.items():
        ranked = unique(rankings.get(query_id, []))
        totals["ndcg@10"] += ndcg_at_k(ranked, relevant, 10)
        totals["recall@10"] += recall_at_k(ranked, relevant, 10)
        totals["recall@100"] += recall_at_k(ranked, relevant, 100)
        totals["mrr@10"] += mrr_at_k(ranked, relevant, 10)
        totals["hit@3"] += hit_at_k(ranked, relevant, 3)
    return {k: v / max(len(qrels), 1) for k, v in totals.items()}


def evaluate_beir(directory: Path, split: str, settings: Settings, store: Path | str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, object]:
    """``eval --beir``: index the corpus (into ``store``, else a store of its own under
    ``paths.beir_store``; a second run only checks the files), retrieve 200 deep for every judged
    query, and score nDCG@10, recall@100 and MRR@10."""
    from dataclasses import replace

    from ..ingest.indexing import reindex
    from ..paths import beir_store
    from ..runtimes.embedder import get_embedder
    from ..search.retrieval import retrieve_configured
    from ..store.store import Store

    data = load_split(directory, split)
    store_path = store or beir_store(directory.resolve().name)
    embedder = get_embedder(settings.embedder)
    reindex([data.corpus], store_path, embedder, progress=progress)
    opened = Store.open(store_path)
    deep = replace(settings, top_k=200, candidates=200)  # enough documents for recall@100
    rankings = {q: [h.doc_id for h in retrieve_configured(opened, embedder, text, [], deep).hits]
                for q, text in data.queries.items()}
    scores = score_rankings(rankings, data.qrels)
    return {"beir": str(directory), "split": split, "queries": len(data.queries),
            "store": str(store_path), "retrieval": settings.retrieval,
            **{k: round(v, 4) for k, v in scores.items()}}
