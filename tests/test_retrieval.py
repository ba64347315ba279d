"""Retrieval (retrieval.py) on the real store: the ACL prefilter inside both legs, fusion and
scores."""

from pathlib import Path

from fakes import HashEmbedder
from ragcli.search.retrieval import retrieve_configured
from ragcli.settings import Settings
from ragcli.store.store import Store


def test_acl_prefilter_inside_both_legs(handbook_store: Path, hash_embedder: HashEmbedder) -> None:
    store = Store.open(handbook_store)
    question = "salary band maximum for a Staff Engineer L5"
    vector = hash_embedder.embed([question])[0]
    for rows in (store.search_vector(vector, ["public"], 200),
                 store.search_fts(question, ["public"], 200)):
        assert rows
        assert all("hr" not in r["acl"] and "finance" not in r["acl"] for r in rows)
    hr_rows = store.search_fts(question, ["public", "hr"], 200)
    assert any(r["doc_id"] == "hr/salary-bands.md" for r in hr_rows)


def test_retrieve_fuses_and_scores(handbook_store: Path, hash_embedder: HashEmbedder) -> None:
    found = retrieve_configured(Store.open(handbook_store), hash_embedder, "parental leave weeks", ["hr"],
                                Settings(top_k=3, candidates=20))
    assert len(found.hits) == 3
    assert found.hits[0].doc_id == "hr/parental-leave.md"
    assert found.groups == ("hr", "public")
    assert found.confidence == max(h.evidence for h in found.hits)
    assert all(0.0 <= h.evidence <= 1.0 for h in found.hits)
    assert all(h.vector_score is not None for h in found.hits)
