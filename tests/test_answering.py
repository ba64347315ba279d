"""The answering pipeline with the real store and fast fakes for the embedder and the model."""

from dataclasses import replace
from pathlib import Path

import pytest

from fakes import EchoGenerator, HashEmbedder
from ragcli.answer.answering import Answerer
from ragcli.audit.trace import AuditLog
from ragcli.errors import StoreMissingError, UsageError
from ragcli.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, handbook_store: Path) -> Settings:
    return Settings(store=tmp_path / "store", audit=tmp_path / "audit.sqlite3",
                    min_confidence=0.3, mode="generative")


def answerer(settings: Settings, generator: EchoGenerator) -> Answerer:
    return Answerer(settings, HashEmbedder(), lambda: generator)


def test_answer_cites_only_allowed_retrieved_passages(settings: Settings) -> None:
    generator = EchoGenerator(reply="Parental leave is 16 weeks [1]. See also [4] and [9].")
    result = answerer(settings, generator).ask("How many weeks of parental leave?",
                                               user="ana", groups=[])
    assert not result.refused
    retrieved = {h.chunk_id: h for h in result.retrieved}
    assert result.citations
    for citation in result.citations:
        assert citation.chunk_id in retrieved
        assert "public" in retrieved[citation.chunk_id].acl
    assert 9 in result.invalid_citations and "[9]" not in result.answer


def test_low_confidence_refuses_without_calling_the_model(settings: Settings) -> None:
    generator = EchoGenerator()
    result = answerer(settings, generator).ask("zebra xylophone quokka", user="ana", groups=[])
    assert result.refused
    assert result.refusal_reason.startswith("low_confidence")
    assert result.answer == "I don't know."
    assert generator.prompts == []


def test_restricted_text_never_reaches_the_prompt(settings: Settings) -> None:
    """The model is called (the bar is low enough) with public passages only; the same question
    from the hr group does put the restricted text into the prompt (the control)."""
    generator = EchoGenerator()
    question = "What is the maximum salary of an L5 Staff Engineer in the salary bands?"
    low_bar = Answerer(replace(settings, min_confidence=0.0), HashEmbedder(), lambda: generator)
    result = low_bar.ask(question, user="ana", groups=[])
    assert result.retrieved and all(h.doc_id != "hr/salary-bands.md" for h in result.retrieved)
    assert len(generator.prompts) == 1
    assert "126,000" not in generator.prompts[0] and "salary-bands" not in generator.prompts[0]
    control = EchoGenerator()
    Answerer(replace(settings, min_confidence=0.0), HashEmbedder(), lambda: control).ask(
        question, user="hana", groups=["hr"])
    assert len(control.prompts) == 1 and "126,000" in control.prompts[0]


def test_model_that_declines_is_a_refusal(settings: Settings) -> None:
    result = answerer(settings, EchoGenerator(reply="I don't know.")).ask(
        "How many weeks of parental leave?", user="ana", groups=[])
    assert result.refused and result.refusal_reason.startswith("model_declined")


def test_unsupported_answer_is_a_refusal(settings: Settings) -> None:
    result = answerer(settings, EchoGenerator(reply="Purple elephants dance quietly.")).ask(
        "How many weeks of parental leave?", user="ana", groups=[])
    assert result.refused and result.refusal_reason.startswith("unsupported_answer")


def test_every_request_is_audited(settings: Settings) -> None:
    generator = EchoGenerator()
    ok = answerer(settings, generator).ask("How many weeks of parental leave?", user="ana",
                                           groups=["hr"])
    refused = answerer(settings, generator).ask("zebra xylophone", user="bo", groups=[])
    with pytest.raises(UsageError):
        answerer(settings, generator).ask("   ", user="cy", groups=[])
    broken = Settings(store=settings.store.parent / "missing", audit=settings.audit)
    with pytest.raises(StoreMissingError):
        answerer(broken, generator).ask("anything", user="dee", groups=[])
    log = AuditLog(settings.audit)
    records = list(log.recent(10))
    assert [r["user"] for r in records] == ["dee", "cy", "bo", "ana"]
    assert [r["status"] for r in records] == ["failed", "failed", "refused", "answered"]
    full = log.get(ok.request_id)
    assert full is not None
    assert full["prompt"]["text"] == generator.prompts[0]
    assert full["model"]["sha256"] == "0" * 64
    assert [r["chunk_id"] for r in full["retrieved"]] == [h.chunk_id for h in ok.retrieved]
    assert full["acl_filter"] == "array_has_any(acl, ['hr', 'public'])"
    assert full["index_version"] >= 1
    assert log.get(refused.request_id)["refusal_reason"].startswith("low_confidence")
    assert records[0]["error"]["exit_code"] == 5


def test_extractive_mode_cites_without_a_model(settings: Settings) -> None:
    from dataclasses import replace as with_

    def no_model() -> EchoGenerator:
        raise AssertionError("extractive mode must not build a generator")

    extractive = Answerer(with_(settings, mode="extractive"), HashEmbedder(), no_model)
    result = extractive.ask("How long is a final written warning valid?", user="hana",
                            groups=["hr"])
    assert not result.refused and result.mode == "extractive"
    assert "12 months" in result.answer and result.answer.endswith("[1]")
    assert result.citations[0].doc_id == "hr/disciplinary-procedure.md"
    assert result.citations[0].chunk_id in {h.chunk_id for h in result.retrieved}
    record = AuditLog(settings.audit).get(result.request_id)
    assert record["mode"] == "extractive" and "prompt" not in record and "model" not in record


def test_extract_reads_table_rows_as_header_value_pairs() -> None:
    from ragcli.answer.extractive import extract_answer
    from ragcli.models import Hit

    table = Hit("p#0", "p", "/p", "Plans", "Kestrel pricing plans",
                "| Plan | Price per month |\n|---|---|\n| Starter | 49 |\n| Team | 390 |",
                "h", ("public",), 1.0)
    extract = extract_answer("What is the price per month of the Team plan?", [table])
    assert extract is not None
    assert extract.text == "Plan: Team; Price per month: 390. [1]"
