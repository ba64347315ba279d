"""The vector (ANN) index: built past a size, ACL prefilter inside the indexed search, new rows
searched before and folded in after a refresh, retrained when the table outgrows it, in status."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fakes import HashEmbedder
from ragcli.cli.app import app
from ragcli.models import Chunk
from ragcli.search.retrieval import effective_groups
from ragcli.store import indices as store_module
from ragcli.store.store import Store

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega river stone cloud maple harbor copper violet lantern "
         "meadow falcon quartz ember glacier orchid canyon saddle thistle prairie").split()


def _chunks(start: int, count: int) -> list[Chunk]:
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + count):
        text = " ".join(rng.choice(WORDS, size=12))
        acl = ("public",) if i % 3 == 0 else ("team-a",) if i % 3 == 1 else ("team-b",)
        out.append(Chunk(f"d{i}#0", f"d{i}", 0, f"docs/d{i}.md", f"d{i}", "", text, f"h{i}",
                         f"dh{i}", acl, corpus="c"))
    return out


def _write(store: Store, chunks: list[Chunk], embedder: HashEmbedder) -> None:
    vectors = embedder.embed([c.search_text for c in chunks])
    with store.writer_lock():
        store.replace_documents([c.doc_key for c in chunks], chunks, vectors, run_id="r",
                                roots={c.doc_key: ("/docs", 0.0) for c in chunks})


def _recall(store: Store, embedder: HashEmbedder, allowed: tuple[str, ...]) -> float:
    hits = total = 0
    for i in range(40):
        query = embedder.embed([" ".join(WORDS[i % len(WORDS):][:4])])[0]
        approx = store.search_vector(query, allowed, 10)
        exact = store.search_vector(query, allowed, 10, exact=True)
        assert all(set(r["acl"]) & set(allowed) for r in approx)  # the prefilter, inside
        truth = {r["chunk_id"]: r["_distance"] for r in exact}
        for row in approx:  # candidates are re-ranked by exact vectors: exact distances
            if row["chunk_id"] in truth:
                assert row["_distance"] == pytest.approx(truth[row["chunk_id"]], abs=1e-5)
        hits += len(truth.keys() & {r["chunk_id"] for r in approx})
        total += len(truth)
    return hits / total


def test_vector_index_lifecycle(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    store = Store.open_or_create(tmp_path / "s", hash_embedder.id, hash_embedder.dim)
    _write(store, _chunks(0, 900), hash_embedder)
    store.refresh_indices(ann_min_rows=1000)
    assert store.vector_index() is None  # below the size: a flat scan
    _write(store, _chunks(900, 300), hash_embedder)
    store.refresh_indices(ann_min_rows=1000)
    state = store.vector_index()
    assert state is not None and state["type"] == "IVF_PQ"
    assert (state["indexed_rows"], state["unindexed_rows"], state["trained_rows"]) == (1200, 0, 1200)
    assert not state["needs_retraining"] and state["retrain_at_rows"] == 1800

    allowed = effective_groups(["team-a"])
    assert _recall(Store.open(tmp_path / "s"), hash_embedder, allowed) >= 0.9

    # new rows: searched (flat) before the refresh folds them into the index
    new = _chunks(1200, 300)
    _write(store, new, hash_embedder)
    reader = Store.open(tmp_path / "s")
    assert reader.vector_index()["unindexed_rows"] == 300  # type: ignore[index]
    target = next(c for c in new if "team-a" in c.acl)
    found = reader.search_vector(hash_embedder.embed([target.search_text])[0], allowed, 3)
    assert found[0]["chunk_id"] == target.chunk_id
    store.refresh_indices(ann_min_rows=1000)
    state = Store.open(tmp_path / "s").vector_index()
    assert state is not None
    assert (state["indexed_rows"], state["unindexed_rows"], state["trained_rows"]) == (1500, 0, 1200)

    # past 1.5x the rows it was trained on, the next refresh retrains it on all of them
    _write(store, _chunks(1500, 400), hash_embedder)
    store.refresh_indices(ann_min_rows=1000)
    state = Store.open(tmp_path / "s").vector_index()
    assert state is not None
    assert (state["trained_rows"], state["deltas"], state["unindexed_rows"]) == (1900, 1, 0)
    assert _recall(Store.open(tmp_path / "s"), hash_embedder, allowed) >= 0.9


def test_status_shows_the_vector_index(cli_env: dict[str, str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def run_cli(args: list[str]):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(app, args)

    corpus = tmp_path / "corpus.jsonl"
    rng = np.random.default_rng(1)
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": "",
                                          "text": " ".join(rng.choice(WORDS, size=10))}) + "\n"
                              for i in range(300)), encoding="utf-8")
    monkeypatch.setattr(store_module, "ANN_MIN_ROWS", 1_000_000)
    result = run_cli(["ingest", str(corpus)])
    assert result.exit_code == 0, result.output
    data = json.loads(run_cli(["status", "--json"]).stdout)
    assert data["vector_index"] == {"type": "none (flat scan)", "built_at_rows": 1_000_000}
    assert data["warm_vector_leg"] == {"path": "memory", "hold_max_rows": 200_000}
    monkeypatch.setenv("RAGCLI_HOLD_MAX_ROWS", "299")  # chat would search through lance
    assert json.loads(run_cli(["status", "--json"]).stdout)["warm_vector_leg"] == \
        {"path": "lance", "hold_max_rows": 299}
    monkeypatch.delenv("RAGCLI_HOLD_MAX_ROWS")
    monkeypatch.setattr(store_module, "ANN_MIN_ROWS", 256)
    corpus.write_text(corpus.read_text() + json.dumps({"_id": "new", "text": "alpha beta"}) + "\n")
    result = run_cli(["ingest", str(corpus)])
    assert result.exit_code == 0, result.output
    data = json.loads(run_cli(["status", "--json"]).stdout)
    assert data["vector_index"]["type"] == "IVF_PQ"
    assert data["vector_index"]["indexed_rows"] == data["chunks"] == 301
    text = run_cli(["status"]).stdout
    assert "vector_index" in text and "IVF_PQ" in text and "needs_retraining: False" in text
