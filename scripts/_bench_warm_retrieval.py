"""Warm retrieval latency: the retrieve() that `ask` uses, in one process, over BEIR test queries.

A helper of scripts/bench, not an entry point.
Usage: _bench_warm_retrieval.py STORE BEIR_DIR; prints one JSON line (p50/p95 in ms)."""

import json
import sys
import time
from pathlib import Path

from ragcli.beir import load_split
from ragcli.embedder import get_embedder
from ragcli.retrieval import retrieve_configured
from ragcli.settings import load_settings
from ragcli.store import Store

store = Store.open(Path(sys.argv[1]))
queries = list(load_split(Path(sys.argv[2]), "test").queries.values())
settings = load_settings({}, environ={})
embedder = get_embedder(settings.embedder)
store.require_embedder(embedder.id)
for question in queries[:20]:  # warm-up: open the table, load the model and the indices
    retrieve_configured(store, embedder, question, [], settings)
times = []
for question in queries:
    start = time.perf_counter()
    retrieve_configured(store, embedder, question, [], settings)
    times.append((time.perf_counter() - start) * 1000)
times.sort()
print(json.dumps({"queries": len(times), "p50_ms": times[len(times) // 2],
                  "p95_ms": times[int(len(times) * 0.95) - 1]}))
