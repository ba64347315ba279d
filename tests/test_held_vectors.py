"""The vector leg in memory (Store.hold_vectors), as chat and ask --batch search: the same hits
as lance's flat scan, the same ACL prefilter (never a row a group may not read, hostile names
included), the path in the audit record, and replay taking that path again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fakes import HashEmbedder
from ragcli.cli.app import app
from ragcli.schema import schema_problems
from ragcli.search.retrieval import effective_groups, retrieve_configured, search_legs
from ragcli.settings import Settings
from ragcli.store.store import Store

QUESTIONS = ["How many weeks of paid parental leave do non-birthing parents get?",
             "What is the maximum salary of an L5 Staff Engineer in the salary bands?",
             "What port does the local API listen on?",
             "What happens at a disciplinary hearing?",
             "how do I expense a taxi"]
GROUPS = [[], ["hr"], ["finance"], ["hr", "finance"], ["nobody-has-this"]]


def held_store(path: Path) -> Store:
    store = Store.open(path)
    assert store.hold_vectors()
    return store


def near_ties(cosines: list[float]) -> bool:
    ordered = sorted(cosines)
    return any(b - a < 1e-6 for a, b in zip(ordered, ordered[1:], strict=False))


def test_the_held_leg_finds_the_rows_lance_finds(handbook_store: Path,
                                                 hash_embedder: HashEmbedder) -> None:
    """The same rows and cosines (within 1e-6); the order differs only among cosines lance
    computes as equal and numpy one unit in the last place apart (the hash embedder's sparse
    vectors make such ties common)."""
    lance, held = Store.open(handbook_store), held_store(handbook_store)
    for question in QUESTIONS:
        for groups in GROUPS:
            allowed = effective_groups(groups)
            a = search_legs(lance, hash_embedder, question, allowed, 20, "vector")
            b = search_legs(held, hash_embedder, question, allowed, 20, "vector")
            assert b.similarities is not None and b.offsets is not None
            ours = {r["chunk_id"]: float(b.similarities[b.offsets[r["chunk_id"]]])
                    for r in b.vector_rows}
            theirs = {r["chunk_id"]: 1.0 - r["_distance"] for r in a.vector_rows}
            cut = min(theirs.values())  # the 20th cosine: a near-tie there may swap members
            assert {c for c, v in ours.items() if v > cut + 1e-6} == \
                {c for c, v in theirs.items() if v > cut + 1e-6}
            for chunk_id in set(ours) & set(theirs):
                assert ours[chunk_id] == pytest.approx(theirs[chunk_id], abs=1e-6)


@pytest.mark.parametrize("mode", ["hybrid", "vector", "fts"])
def test_held_vectors_retrieve_what_lance_retrieves(handbook_store: Path,
                                                    hash_embedder: HashEmbedder, mode: str) -> None:
    """Whole retrievals agree wherever the vector leg has no near-tie (see above)."""
    lance, held = Store.open(handbook_store), held_store(handbook_store)
    settings = Settings(top_k=5, candidates=20, retrieval=mode)
    compared = 0
    for question in QUESTIONS:
        for groups in GROUPS:
            a = retrieve_configured(lance, hash_embedder, question, groups, settings)
            b = retrieve_configured(held, hash_embedder, question, groups, settings)
            assert (a.vector_leg, b.vector_leg) == ("lance", "memory")
            legs = search_legs(lance, hash_embedder, question, effective_groups(groups), 20,
                               "vector")
            if near_ties([1.0 - r["_distance"] for r in legs.vector_rows]):
                continue
            assert [h.chunk_id for h in a.hits] == [h.chunk_id for h in b.hits], (question, groups)
            assert [h.text for h in a.hits] == [h.text for h in b.hits]
            for x, y in zip(a.hits, b.hits, strict=True):
                assert x.vector_score == pytest.approx(y.vector_score, abs=1e-5)
                assert x.score == pytest.approx(y.score, abs=1e-9)
            assert a.confidence == pytest.approx(b.confidence, abs=1e-5)
            compared += 1
    assert compared >= 5


def test_the_held_leg_never_returns_a_row_its_groups_may_not_read(
        handbook_store: Path, hash_embedder: HashEmbedder) -> None:
    store = held_store(handbook_store)
    assert store.held is not None
    question = QUESTIONS[1]
    vector = hash_embedder.embed([question])[0]
    for groups in GROUPS + [["public", "x') OR true --"], ["%"], ["hr'"]]:
        allowed = effective_groups([g for g in groups if g.replace("-", "").isalnum()])
        allowed = tuple(sorted({*allowed, *groups}))  # hostile names too, unvalidated
        found = store.held.nearest(store.held.similarities(vector), allowed, 1000)
        rows = store.fetch([store.held.chunk_ids[n] for n, _ in found])
        assert rows and all(set(r["acl"]) & set(allowed) for r in rows.values())
        # exactly the readable rows: lance's prefilter admits the same set
        lance_rows = Store.open(handbook_store).search_vector(vector, allowed, 1000)
        assert set(rows) == {r["chunk_id"] for r in lance_rows}
        if "hr" not in allowed:
            assert all(not r["doc_id"].startswith("hr/salary") for r in rows.values())


def test_hostile_groups_through_the_held_legs(handbook_store: Path) -> None:
    store = held_store(handbook_store)
    for group in ["x') OR true --", "'", "hr'", "%", "hr' OR 'a'='a"]:
        legs = search_legs(store, HashEmbedder(), QUESTIONS[1], ("public", group), 50)
        assert legs.vector_leg == "memory" and legs.fetch is not None
        ids = [r["chunk_id"] for r in legs.vector_rows + legs.fts_rows]
        docs = {r["doc_id"] for r in legs.fetch(ids).values()}
        assert docs and "hr/salary-bands.md" not in docs


def test_the_nearest_rows_are_exact_and_ordered(handbook_store: Path,
                                                hash_embedder: HashEmbedder) -> None:
    store = held_store(handbook_store)
    held = store.held
    assert held is not None
    vector = hash_embedder.embed([QUESTIONS[0]])[0]
    similarities = held.similarities(vector)
    expected = held.vectors.astype(np.float64) @ np.asarray(vector, dtype=np.float64)
    assert np.abs(similarities - expected).max() < 1e-5
    found = held.nearest(similarities, ["public"], 7)
    readable = [n for n in range(len(held.chunk_ids)) if held.readable(["public"])[n]]
    best = sorted(readable, key=lambda n: (-similarities[n], held.original[n]))[:7]
    assert [n for n, _ in found] == best
    assert held.nearest(similarities, ["public"], 0) == []
    assert len(held.nearest(similarities, ["public"], 10_000)) == len(readable)


def test_only_the_readable_runs_are_multiplied_and_they_are_exact(
        handbook_store: Path, hash_embedder: HashEmbedder) -> None:
    """Rows are held grouped by ACL: a group set's readable rows are a few runs, and the
    product over those runs gives bitwise the cosines of the whole product (NaN for the rows it
    may not read); the rows are the same rows, in scan order within a group."""
    from ragcli.store.held import _cut

    held = held_store(handbook_store).held
    assert held is not None
    assert sorted(held.original.tolist()) == list(range(len(held.chunk_ids)))
    scanned = held.columns.column("acl").to_pylist()  # the hit columns stay in scan order
    acls = [scanned[n] for n in held.original.tolist()]  # the rows as held
    assert len({tuple(a) for a in acls}) > 1  # the handbook has restricted documents
    # rows with one ACL are contiguous
    seen: list[tuple[str, ...]] = []
    for acl in map(tuple, acls):
        if not seen or seen[-1] != acl:
            assert acl not in seen
            seen.append(acl)
    vector = hash_embedder.embed([QUESTIONS[1]])[0]
    everything = held.similarities(vector)
    for groups in GROUPS:
        allowed = effective_groups(groups)
        mask = held.readable(allowed)
        part = held.similarities(vector, allowed)
        assert np.array_equal(part[mask], everything[mask])
        assert np.isnan(part[~mask]).all()
        runs = held._view(allowed)[2]
        assert len(runs) <= len(seen)
    for runs, parts in (([(0, 10)], 3), ([(0, 4), (7, 9), (20, 21)], 2), ([(5, 6)], 4),
                        ([(0, 100_003)], 4)):
        cut = _cut(runs, parts)
        assert len(cut) == parts
        rows = [r for pieces in cut for lo, hi in pieces for r in range(lo, hi)]
        assert rows == [r for lo, hi in runs for r in range(lo, hi)]
        sizes = [sum(hi - lo for lo, hi in pieces) for pieces in cut]
        assert max(sizes) - min(sizes) <= 1


def test_ties_at_the_cut_go_to_the_first_scanned_rows(handbook_store: Path) -> None:
    """Equal cosines (the same text in two documents has the same vector) at the cut of the
    candidate list: the rows scanned first, whatever the held layout."""
    held = held_store(handbook_store).held
    assert held is not None
    allowed = effective_groups(["hr"])
    readable = np.flatnonzero(held.readable(allowed))
    similarities = np.zeros(len(held.chunk_ids), dtype=np.float32)  # every row tied
    best = readable[np.argmax(held.original[readable])]  # the last scanned, but the best
    similarities[best] = 1.0
    found = [n for n, _ in held.nearest(similarities, allowed, 5)]
    first = sorted(readable.tolist(), key=lambda n: held.original[n])
    assert found == [best, *[n for n in first if n != best][:4]]


def test_a_store_over_the_size_limit_is_not_held(handbook_store: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ragcli.store import held as store_module

    store = Store.open(handbook_store)
    monkeypatch.setattr(store_module, "HOLD_MAX_ROWS", 3)
    assert not store.hold_vectors()
    assert store.held is None and store.fetch(["x"]) == {}
    assert not store.hold_vectors(0) and not store.hold_vectors(3) and store.held is None
    assert store.hold_vectors(any_size=True) and store.held is not None


def test_batch_answers_record_the_memory_leg_and_replay_identically(
        handbook_store: Path, cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    batch = tmp_path / "q.jsonl"
    batch.write_text("\n".join(json.dumps(q) for q in QUESTIONS[:3]) + "\n")
    result = runner.invoke(app, ["ask", "--batch", str(batch), "--mode", "extractive"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3
    for row in rows:
        shown = json.loads(runner.invoke(app, ["traces", "show", row["request_id"],
                                               "--json"]).stdout)
        assert shown["vector_leg"] == "memory"
        assert schema_problems(shown, "trace") == []
        replayed = runner.invoke(app, ["replay", row["request_id"], "--json"])
        assert replayed.exit_code == 0, replayed.output
        assert json.loads(replayed.stdout)["outcome"] == "identical"
    single = runner.invoke(app, ["ask", QUESTIONS[0], "--mode", "extractive", "--json"])
    asked = json.loads(runner.invoke(app, ["traces", "show", json.loads(single.stdout)["request_id"],
                                           "--json"]).stdout)
    assert asked["vector_leg"] == "lance"  # a cold ask reads lance once instead


def test_the_product_is_the_same_on_any_number_of_threads(handbook_store: Path,
                                                          hash_embedder: HashEmbedder,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Bitwise: a chat on 4 cores and its replay on 1 rank the same rows the same way."""
    from ragcli.store import held as store_module

    held = held_store(handbook_store).held
    assert held is not None
    rng = np.random.default_rng(0)
    dim = held.vectors.shape[1]
    held.vectors = rng.normal(size=(5003, dim)).astype(np.float32)  # odd sizes: uneven slices
    queries = [hash_embedder.embed([q])[0] for q in QUESTIONS]
    alone = [held.similarities(q) for q in queries]
    monkeypatch.setattr(store_module, "_HOLD_SPLIT_ROWS", 1)
    real = held_store(handbook_store).held  # and the readable runs of a real ACL layout
    assert real is not None
    runs_alone = [real.similarities(q, ["public", "hr"]) for q in queries]
    for threads in (2, 3, 4):
        monkeypatch.setattr(store_module, "_HOLD_THREADS", threads)
        for query, expected in zip(queries, alone, strict=True):
            assert np.array_equal(held.similarities(query), expected)
        for query, expected in zip(queries, runs_alone, strict=True):
            assert np.array_equal(real.similarities(query, ["public", "hr"]), expected,
                                  equal_nan=True)


@pytest.mark.parametrize("mode", ["hybrid", "vector", "fts"])
def test_ids_only_legs_retrieve_exactly_what_whole_rows_did(
        handbook_store: Path, hash_embedder: HashEmbedder, mode: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A local store's legs return ids (the columns of the kept hits and the vectors of hits
    only the full-text leg found are read afterwards): the same hits, scores and texts, bit for
    bit, as legs returning whole rows (what an object-storage store still does)."""
    settings = Settings(top_k=5, candidates=20, retrieval=mode)
    lazy = [retrieve_configured(Store.open(handbook_store), hash_embedder, q, g, settings)
            for q in QUESTIONS for g in GROUPS]
    monkeypatch.setattr(Store, "lazy_rows", property(lambda self: False))
    whole = [retrieve_configured(Store.open(handbook_store), hash_embedder, q, g, settings)
             for q in QUESTIONS for g in GROUPS]
    assert [a.hits for a in lazy] == [b.hits for b in whole]
    assert [a.confidence for a in lazy] == [b.confidence for b in whole]
    assert sum(len(a.hits) for a in lazy) > 50


def test_a_batch_whose_store_cannot_be_held_answers_through_lance(
        handbook_store: Path, cli_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ragcli.errors import StoreError
    from ragcli.store.held import HeldVectors

    def damaged(self: HeldVectors, *args: object) -> None:
        raise StoreError("store is damaged: it holds non-finite vectors")

    monkeypatch.setattr(HeldVectors, "__init__", damaged)
    assert not Store.open(handbook_store).hold_vectors()
    batch = tmp_path / "q.jsonl"
    batch.write_text("\n".join(json.dumps(q) for q in QUESTIONS[:2]) + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["ask", "--batch", str(batch), "--mode", "extractive"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2 and all("request_id" in r for r in rows)
    shown = json.loads(runner.invoke(app, ["traces", "show", rows[0]["request_id"],
                                           "--json"]).stdout)
    assert shown["vector_leg"] == "lance"


def test_hold_max_rows_zero_keeps_a_batch_on_lance(handbook_store: Path, cli_env: dict[str, str],
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGCLI_HOLD_MAX_ROWS", "0")
    batch = tmp_path / "q.jsonl"
    batch.write_text(json.dumps(QUESTIONS[0]) + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["ask", "--batch", str(batch), "--mode", "extractive"])
    assert result.exit_code == 0, result.output
    request_id = json.loads(result.stdout)["request_id"]
    shown = json.loads(runner.invoke(app, ["traces", "show", request_id, "--json"]).stdout)
    assert shown["vector_leg"] == "lance"
    monkeypatch.setenv("RAGCLI_HOLD_MAX_ROWS", "-1")
    bad = runner.invoke(app, ["ask", "--batch", str(batch), "--mode", "extractive"])
    assert bad.exit_code != 0 and "hold_max_rows" in bad.stderr and "Traceback" not in bad.output
