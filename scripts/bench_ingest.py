"""See scripts/bench_ingest."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from ragcli.ingest.indexing import reindex
from ragcli.runtimes.embedder import get_embedder
from ragcli.settings import Settings
from ragcli.store.store import Store

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "corpus.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description="Ingest throughput: a full ingest, a no-op "
                                     "reindex and a 1 % change, in documents/s and chunks/s.")
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT,
                        help="a BEIR corpus.jsonl (default: ../shared/data/scifact)")
    source = parser.parse_args().corpus
    if not source.is_file():
        sys.exit(f"bench_ingest: corpus not found: {source} (pass a BEIR corpus.jsonl)")
    embedder = get_embedder(Settings().embedder)  # the default (ONNX int8), as `ragcli ingest`
    embedder.embed(["warm up the model"])  # load time is not ingest throughput
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        corpus.write_bytes(source.read_bytes())
        store = Path(tmp) / "store"
        rows = []

        def run(label: str) -> None:
            start = time.perf_counter()
            report = reindex([corpus], store, embedder)
            seconds = time.perf_counter() - start
            touched = report.added + report.changed + report.deleted
            rows.append((label, seconds, touched, report.chunks_embedded, Store.open(store).version))

        run("full ingest")
        run("no-op reindex")
        lines = corpus.read_text(encoding="utf-8").splitlines()
        for i in range(0, len(lines), 100):  # change 1 % of the documents
            row = json.loads(lines[i])
            row["text"] += " (revised)"
            lines[i] = json.dumps(row)
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        run("reindex, 1 % changed")
        documents = len(Store.open(store).documents())
    print(f"corpus: {source} ({documents} documents), embedder: {embedder.id}")
    print(f"{'run':<24}{'seconds':>9}{'docs':>8}{'docs/s':>9}{'chunks':>8}{'chunks/s':>10}{'version':>9}")
    for label, seconds, docs, chunks, version in rows:
        print(f"{label:<24}{seconds:>9.2f}{docs:>8}{docs / seconds:>9.1f}{chunks:>8}"
              f"{chunks / seconds:>10.1f}{version:>9}")


if __name__ == "__main__":
    main()
