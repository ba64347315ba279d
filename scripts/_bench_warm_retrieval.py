"""Warm retrieval latency: the retrieve() that `ask` uses, in one process, over BEIR test queries,
two ways side by side (each query through both, alternately): the vector leg through lance (what
a one-question `ask` does) and with the vectors held in memory (`Store.hold_vectors`: what `chat`
and `ask --batch` do).

A helper of scripts/bench, not an entry point.
Usage: _bench_warm_retrieval.py STORE BEIR_DIR [GROUP...]; prints one JSON line (ms)."""

import json
import statistics
import sys
import time
from pathlib import Path

from ragcli.evaluate.beir import load_split
from ragcli.runtimes.embedder import get_embedder
from ragcli.search.retrieval import retrieve_configured
from ragcli.settings import load_settings
from ragcli.store.store import Store

groups = sys.argv[3:]
stores = {"lance": Store.open(Path(sys.argv[1])), "held": Store.open(Path(sys.argv[1]))}
queries = list(load_split(Path(sys.argv[2]), "test").queries.values())
settings = load_settings({}, environ={})
embedder = get_embedder(settings.embedder)
embedder.recent_texts = 0  # type: ignore[attr-defined]  # every query embedded afresh (both ways)
stores["lance"].require_embedder(embedder.id)
opened = stores["held"].version  # opens the dataset (and imports lance): not holding
start = time.perf_counter()
stores["held"].hold_vectors(any_size=True)
hold_ms = (time.perf_counter() - start) * 1000
for question in queries[:20]:  # warm-up: open the table, load the model and the indices
    for store in stores.values():
        retrieve_configured(store, embedder, question, groups, settings)
times: dict[str, list[float]] = {name: [] for name in stores}
legs: dict[str, dict[str, list[float]]] = {name: {} for name in stores}
for question in queries:
    for name, store in stores.items():
        start = time.perf_counter()
        found = retrieve_configured(store, embedder, question, groups, settings)
        times[name].append((time.perf_counter() - start) * 1000)
        for leg, ms in found.timings_ms.items():
            legs[name].setdefault(leg, []).append(ms)


def p95(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.95) - 1]


out = {"queries": len(queries), "hold_ms": hold_ms}
for name in stores:
    out[f"{name}_p50_ms"] = statistics.median(times[name])
    out[f"{name}_p95_ms"] = p95(times[name])
    out[f"{name}_legs_p50_ms"] = {k: round(statistics.median(v), 2) for k, v in legs[name].items()}
out["p50_ms"], out["p95_ms"] = out["lance_p50_ms"], out["lance_p95_ms"]
print(json.dumps(out))
