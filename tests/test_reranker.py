"""The reranker seam: ``reranker = none | minilm | module:function``, what it reorders (only what
the user may read), what the record says of it, and replay. Fast: a term-overlap stand-in is
registered as ``minilm`` (the shipped ONNX reranker runs in tests/test_real_components.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fakes import HashEmbedder
from ragcli.answer.answering import Answerer
from ragcli.answer.replay import replay
from ragcli.audit.trace import AuditLog
from ragcli.errors import ConfigError, ModelChangedError, ModelError
from ragcli.runtimes import reranker as reranker_module
from ragcli.schema import schema_problems
from ragcli.search.retrieval import load_reranker, retrieve_configured
from ragcli.settings import Settings, load_settings
from ragcli.store.store import Store
from ragcli.text import content_terms

QUESTION = "How many weeks of paid parental leave do non-birthing parents get?"


class OverlapReranker:
    """Scores a passage by how many of the question's terms it holds (the last word wins ties:
    an order fusion would not give); remembers every passage it was shown."""

    id = "test-overlap"
    seen: list[str] = []

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __call__(self, question: str, hits: list) -> list:  # type: ignore[type-arg]
        asked = content_terms(question)
        head = hits[:self.depth]
        OverlapReranker.seen += [h.doc_id for h in head]
        scores = [float(len(asked & content_terms(h.text))) for h in head]
        order = sorted(range(len(head)), key=lambda i: (-scores[i], -i))
        return [replace(head[i], rerank_score=scores[i]) for i in order] + hits[self.depth:]

    def record(self) -> dict[str, object]:
        return {"id": self.id, "weights_sha256": "0" * 64, "onnx_sha256": "0" * 64,
                "runtime": "test", "depth": self.depth}


class OtherWeights(OverlapReranker):
    def record(self) -> dict[str, object]:
        return {**super().record(), "weights_sha256": "1" * 64}


@pytest.fixture(autouse=True)
def overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(reranker_module.RERANKERS, "minilm", OverlapReranker)
    OverlapReranker.seen = []


@pytest.fixture
def settings(tmp_path: Path, handbook_store: Path) -> Settings:
    return Settings(store=handbook_store, audit=tmp_path / "audit.sqlite3", min_confidence=0.1,
                    mode="extractive", reranker="minilm", rerank_depth=8, rerank_weight=1.0)


def test_none_and_an_empty_setting_turn_it_off_and_an_unknown_name_is_one_clear_error() -> None:
    assert load_reranker(None) is None and load_reranker("none") is None
    assert load_reranker(" None ") is None and load_reranker("") is None
    assert isinstance(load_reranker("minilm", 5), OverlapReranker)
    with pytest.raises(ModelError, match="unknown reranker 'bogus'"):
        load_reranker("bogus")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        load_reranker("no_such_module_here:rerank")


def test_the_reranker_reorders_the_fused_candidates_and_off_gives_fusion_order(
        settings: Settings) -> None:
    store = Store.open(settings.store)
    off = retrieve_configured(store, HashEmbedder(), QUESTION, ["everyone"],
                              replace(settings, reranker="none"))
    on = retrieve_configured(store, HashEmbedder(), QUESTION, ["everyone"], settings)
    assert off.reranker is None and all(h.rerank_score is None for h in off.hits)
    assert on.reranker == OverlapReranker(8).record()
    scores = [h.rerank_score for h in on.hits]
    assert None not in scores and scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert "rerank" in on.timings_ms and "rerank" not in off.timings_ms
    # off is exactly the ranking without the seam: the same hits, in the same order
    plain = retrieve_configured(store, HashEmbedder(), QUESTION, ["everyone"],
                                replace(settings, reranker=None))
    assert [h.chunk_id for h in off.hits] == [h.chunk_id for h in plain.hits]


def test_the_reranker_never_sees_a_passage_the_user_may_not_read(settings: Settings) -> None:
    store = Store.open(settings.store)
    retrieve_configured(store, HashEmbedder(), "What are the salary bands and the bank details?",
                        ["everyone"], replace(settings, rerank_depth=50))
    assert OverlapReranker.seen and not {"hr/salary-bands.md", "finance/bank-details.md"} & {
        d.split(":")[-1] for d in OverlapReranker.seen}
    OverlapReranker.seen = []
    retrieve_configured(store, HashEmbedder(), "What are the salary bands and the bank details?",
                        ["hr"], replace(settings, rerank_depth=50))
    assert any(d.endswith("salary-bands.md") for d in OverlapReranker.seen)


def test_the_record_names_the_reranker_and_each_hit_its_score_and_replay_checks_it(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    answerer = Answerer(settings, HashEmbedder(), lambda: pytest.fail("no model in extractive mode"))
    answer = answerer.ask(QUESTION, user="ana", groups=[])
    record = AuditLog(settings.audit).get(answer.request_id)
    assert record is not None and record["reranker"] == OverlapReranker(8).record()
    assert all("rerank_score" in r for r in record["retrieved"])
    assert schema_problems(record, "trace") == []
    shown = answer.to_json()
    assert all("rerank_score" in r for r in shown["retrieved"]) and schema_problems(shown) == []
    report = replay(record, against="recorded", embedder=HashEmbedder(),
                    generator_factory=lambda *_: pytest.fail("no model"))  # type: ignore[arg-type,return-value]
    assert report.outcome == "identical"
    monkeypatch.setitem(reranker_module.RERANKERS, "minilm", OtherWeights)
    with pytest.raises(ModelChangedError, match="reranker"):
        replay(record, against="recorded", embedder=HashEmbedder(),
               generator_factory=lambda *_: pytest.fail("no model"))  # type: ignore[arg-type,return-value]


def test_rerank_weight_blends_the_rerankers_ranks_with_fusions(settings: Settings) -> None:
    """rerank_weight w: each reordered hit scores (1 - w) / (10 + fusion rank) + w / (10 +
    reranker rank); 0 is fusion's order, 1 the reranker's; the record says the weight."""
    store = Store.open(settings.store)

    def order(weight: float) -> list[str]:
        found = retrieve_configured(store, HashEmbedder(), QUESTION, ["everyone"],
                                    replace(settings, rerank_weight=weight, top_k=8))
        return [h.chunk_id for h in found.hits]

    fused = order(0.0)
    assert fused == [h.chunk_id for h in retrieve_configured(
        store, HashEmbedder(), QUESTION, ["everyone"], replace(settings, reranker="none",
                                                               top_k=8)).hits]
    alone = order(1.0)
    assert alone != fused  # the stand-in reorders these
    score = {c: 0.5 / (10 + fused.index(c)) + 0.5 / (10 + alone.index(c)) for c in fused}
    assert order(0.5) == sorted(fused, key=lambda c: (-score[c], fused.index(c)))
    blended = retrieve_configured(store, HashEmbedder(), QUESTION, ["everyone"],
                                  replace(settings, rerank_weight=0.5))
    assert blended.reranker == {**OverlapReranker(8).record(), "weight": 0.5}
    with pytest.raises(ConfigError, match="rerank_weight must be between 0 and 1"):
        load_settings({}, environ={"RAGCLI_RERANK_WEIGHT": "1.5"})


def test_a_record_from_before_blending_replays_with_the_rerankers_order_alone(
        settings: Settings) -> None:
    answer = Answerer(settings, HashEmbedder(), lambda: pytest.fail("no model")).ask(
        QUESTION, user="ana", groups=[])
    record = AuditLog(settings.audit).get(answer.request_id)
    assert record is not None and record["settings"]["rerank_weight"] == 1.0
    del record["settings"]["rerank_weight"]  # written before the setting existed
    report = replay(record, against="recorded", embedder=HashEmbedder(),
                    generator_factory=lambda *_: pytest.fail("no model"))  # type: ignore[arg-type,return-value]
    assert report.outcome == "identical"


def test_without_a_reranker_the_record_has_no_reranker_and_no_scores(settings: Settings) -> None:
    off = replace(settings, reranker=None)
    answer = Answerer(off, HashEmbedder(), lambda: pytest.fail("no model")).ask(QUESTION, user="ana",
                                                                                  groups=[])
    record = AuditLog(off.audit).get(answer.request_id)
    assert record is not None and "reranker" not in record
    assert all("rerank_score" not in r for r in record["retrieved"])


def test_rerank_depth_must_be_positive_and_none_turns_the_reranker_off_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="rerank_depth must be at least 1"):
        load_settings(environ={"RAGCLI_RERANK_DEPTH": "0"})
    settings = load_settings(environ={"RAGCLI_RERANKER": "none", "RAGCLI_RERANK_DEPTH": "12"})
    assert settings.rerank_depth == 12 and load_reranker(settings.reranker) is None
