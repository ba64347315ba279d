"""See scripts/bench_reader_tuning: does ``ragcli tune --reader`` help on a user's own questions?

A golden set is split into ``--folds`` parts (case i goes to part i mod folds: the file's order,
no randomness); for each part the reader is fine-tuned on the other parts' questions exactly as
``ragcli tune --reader`` does (the same windows, training and file), then the shipped reader and
the tuned one answer the held-out part in mode auto through the same ``evaluate()`` the eval gate
runs, at the configured ``min_reader_score``. One row per (fold, reader), then the folds pooled
(cases summed, F1 and EM weighted by answerable cases). The tuned files are written under
``--work`` and left there.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from ragcli.evaluate.calibration import corpus_store
from ragcli.evaluate.goldens import load_goldens
from ragcli.evaluate.tuning import compare_readers, reader_examples
from ragcli.paths import file_sha256
from ragcli.runtimes.embedder import get_embedder
from ragcli.runtimes.finetuned import base_model_dir, load_tokenizer
from ragcli.runtimes.generation import LlamaCppGenerator
from ragcli.runtimes.training import tune_reader
from ragcli.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = (("EM", "exact_match"), ("F1", "token_f1"), ("right", "answered_right"),
           ("wrong", "wrong_answers"), ("refused", "refused_answerable"),
           ("wrong rate", "wrong_answer_rate"), ("answered must-refuse", "answered_when_should_refuse"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--goldens", type=Path, default=ROOT / "goldens" / "handbook.jsonl")
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpora" / "handbook")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / ".ragcli" / "bench" / "reader-tuning")
    args = parser.parse_args()
    if args.folds < 2:
        parser.error("--folds must be at least 2")
    lines = [x for x in args.goldens.read_text(encoding="utf-8").splitlines() if x.strip()]
    embedder = get_embedder(Settings().embedder)
    store = corpus_store(args.corpus, args.work / "store", embedder)
    settings = replace(Settings(), store=store.path, mode="auto", span_reader="minilm")
    tokenizer = load_tokenizer(base_model_dir())
    print(f"{args.goldens} ({len(lines)} cases) in {args.folds} folds; corpus {args.corpus}; "
          f"min_reader_score {settings.min_reader_score}; epochs {args.epochs}, lr {args.lr}, "
          f"seed {args.seed}", flush=True)
    header = "| fold | reader | cases | " + " | ".join(c for c, _ in COLUMNS) + " | train s |"
    rows: list[str] = [header, "|" + "---|" * (len(COLUMNS) + 4)]
    pooled: dict[str, dict[str, float]] = {}
    for fold in range(args.folds):
        held = args.work / f"fold{fold}-test.jsonl"
        train = args.work / f"fold{fold}-train.jsonl"
        held.write_text("".join(x + "\n" for i, x in enumerate(lines) if i % args.folds == fold))
        train.write_text("".join(x + "\n" for i, x in enumerate(lines) if i % args.folds != fold))
        items, counts = reader_examples(load_goldens(train), store, settings, embedder, tokenizer)
        out = args.work / f"fold{fold}-reader.safetensors"
        began = time.perf_counter()
        tune_reader(items, out, epochs=args.epochs, lr=args.lr, batch=16, seed=args.seed,
                    threads=len(os.sched_getaffinity(0)), report=lambda line: None,
                    summary={"goldens": str(train), "counts": counts})
        seconds = time.perf_counter() - began
        print(f"fold {fold}: trained on {counts}, {seconds:.0f} s, {out.name} sha256 "
              f"{file_sha256(out)[:16]}", flush=True)
        found, _ = compare_readers([(held, args.corpus)], settings, embedder, out, args.work, 0,
                                   generator_for=lambda s: LlamaCppGenerator(s))
        for row in found:
            label = "shipped" if row["model"] == "current" else "tuned"
            cells = [f"{row.get(key, 0.0):.3f}" if "rate" in name or name in ("EM", "F1")
                     else f"{row.get(key, 0.0):.0f}" for name, key in COLUMNS]
            rows.append(f"| {fold} | {label} | {row['cases']} | " + " | ".join(cells) + " | "
                        + (f"{seconds:.0f} |" if label == "tuned" else "- |"))
            total = pooled.setdefault(label, {})
            answerable = sum(row.get(k, 0.0) for k in
                             ("answered_right", "wrong_answers", "refused_answerable"))
            for name, key in COLUMNS:
                weight = answerable if name in ("EM", "F1") else 1
                total[name] = total.get(name, 0.0) + row.get(key, 0.0) * weight
            total["answerable"] = total.get("answerable", 0.0) + answerable
            total["cases"] = total.get("cases", 0.0) + row["cases"]
    for label, total in pooled.items():
        given = total["right"] + total["wrong"]
        cells = [f"{total[n] / total['answerable']:.3f}" if n in ("EM", "F1")
                 else f"{total['wrong'] / given:.3f}" if n == "wrong rate" and given
                 else f"{total[n]:.0f}" for n, _ in COLUMNS]
        rows.append(f"| all | {label} | {total['cases']:.0f} | " + " | ".join(cells) + " | - |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
