"""Split a BEIR-layout QA set (squad-a) by article, for training on one half and judging on the other.

SQuAD asks several questions of each paragraph, often with the same answer: an adapter trained on
questions of the articles a golden set asks about can learn those facts, and its score on that
golden set then says little about the hidden half (other articles). This writes

- OUT/train/: corpus.jsonl (every paragraph, so retrieval sees the same distractors), and the
  queries and qrels of the *training* articles only (every other article in sorted order);
- OUT/goldens-seen.jsonl: the golden cases about the training articles;
- OUT/goldens-unseen.jsonl: the golden cases about the other articles, and the absent-topic cases.

Usage: python scripts/split_articles.py ../shared/data/squad-a OUT
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def article(doc_id: str) -> str:
    return doc_id.split("#", 1)[0]


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    qrels = (data / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    doc_of = {line.split("\t")[0]: line.split("\t")[1] for line in qrels[1:] if line.strip()}
    articles = sorted({article(d) for d in doc_of.values()})
    train = set(articles[0::2])
    (out / "train" / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data / "corpus.jsonl", out / "train" / "corpus.jsonl")
    kept = {q for q, d in doc_of.items() if article(d) in train}
    (out / "train" / "qrels" / "test.tsv").write_text(
        "\n".join([qrels[0], *(line for line in qrels[1:] if line.split("\t")[0] in kept)]) + "\n",
        encoding="utf-8")
    queries = [line for line in (data / "queries.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip() and json.loads(line)["_id"] in kept]
    (out / "train" / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    seen, unseen = [], []
    for line in (data / "goldens.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            docs = json.loads(line).get("expected_docs") or []
            (seen if docs and article(docs[0]) in train else unseen).append(line)
    (out / "goldens-seen.jsonl").write_text("\n".join(seen) + "\n", encoding="utf-8")
    (out / "goldens-unseen.jsonl").write_text("\n".join(unseen) + "\n", encoding="utf-8")
    print(f"training articles: {', '.join(sorted(train))}")
    print(f"{len(queries)} training questions; goldens: {len(seen)} seen, {len(unseen)} unseen "
          f"(with the absent-topic cases)")


if __name__ == "__main__":
    main()
