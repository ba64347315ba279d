"""The BM25 baseline of scripts/bench_retrieval: bm25s with its default parameters (Lucene BM25,
k1 1.5, b 0.75) and English stopwords, over title + text of each BEIR document. Runs in the
benchmark's own venv (bm25s is not a ragcli dependency). A helper, not an entry point.
Usage: _bench_bm25.py CORPUS_JSONL QUERIES_JSON DEPTH; QUERIES_JSON maps query id -> text;
prints one JSON object: query id -> document ids, best first."""

import json
import sys

import bm25s

corpus_file, queries_file, depth = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids, texts = [], []
with open(corpus_file, encoding="utf-8") as handle:
    for line in handle:
        if line.strip():
            row = json.loads(line)
            ids.append(str(row["_id"]))
            texts.append(f"{row.get('title', '')} {row['text']}".strip())
with open(queries_file, encoding="utf-8") as handle:
    queries = json.load(handle)
retriever = bm25s.BM25()
retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
names = list(queries)
found, _ = retriever.retrieve(bm25s.tokenize([queries[q] for q in names], stopwords="en",
                                             show_progress=False),
                              k=min(depth, len(ids)), show_progress=False)
print(json.dumps({q: [ids[i] for i in row] for q, row in zip(names, found.tolist(), strict=True)}))
