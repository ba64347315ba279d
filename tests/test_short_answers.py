"""Short answers with their quote, and claim checks that keep a made-up number from being shown."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakes import EchoGenerator, HashEmbedder
from ragcli.answer.answering import Answerer
from ragcli.answer.claims import failed_claims
from ragcli.answer.reading import choose_span, locate, quote_for
from ragcli.answer.spans import question_type, rule_spans
from ragcli.audit.trace import AuditLog
from ragcli.cli import ask as ask_command
from ragcli.cli.app import app
from ragcli.models import Hit
from ragcli.schema import schema_problems
from ragcli.settings import Settings

QUESTION = "How many weeks of paid parental leave do non-birthing parents get?"


@pytest.fixture
def settings(tmp_path: Path, handbook_store: Path) -> Settings:
    # mode auto here is the GGUF model choosing the span (test_reader.py: the extractive reader)
    return Settings(store=tmp_path / "store", audit=tmp_path / "audit.sqlite3", min_confidence=0.3,
                    span_reader="gguf")


def ask(settings: Settings, generator: EchoGenerator, mode: str, question: str = QUESTION):  # type: ignore[no-untyped-def]
    answerer = Answerer(replace(settings, mode=mode), HashEmbedder(), lambda: generator)
    answer = answerer.ask(question, user="ana", groups=[])
    return answer, AuditLog(settings.audit).get(answer.request_id)


# ---- spans and claims, pure --------------------------------------------------------------------
@pytest.mark.parametrize(("question", "kind"), [
    ("How many weeks of leave?", "number"), ("What percentage of staff?", "number"),
    ("When did the war end?", "date"), ("In what year was it built?", "date"),
    ("Who founded the company?", "name"), ("Where is the office?", "name"),
    ("What is the mystical type of Islam called?", "other")])
def test_question_types(question: str, kind: str) -> None:
    assert question_type(question) == kind


def test_a_number_question_gets_the_number_with_its_unit_even_when_the_question_names_the_unit() -> None:
    sentence = "Non-birthing parents receive 16 weeks of fully paid leave."
    assert rule_spans(QUESTION, sentence)[0].text == "16 weeks"


def test_a_date_question_gets_the_year_and_a_name_question_a_name() -> None:
    assert rule_spans("When was the bridge completed?",
                      "The bridge was completed in 1932 after four years.")[0].text == "1932"
    assert rule_spans("Who designed the bridge?",
                      "The bridge was designed by Maria Lopez in Vienna.")[0].text == "Maria Lopez"


def test_a_model_chosen_span_is_always_a_substring_of_the_quote() -> None:
    sentence = "The bridge was designed by Maria Lopez in 1928 and completed in 1932."
    choice = choose_span("When was the bridge completed?", sentence,
                         lambda spans, bonus: [float(len(s)) for s in spans])  # prefers the longest
    assert choice is not None and choice.method == "model"
    assert choice.span.text in sentence and sentence[choice.span.start:choice.span.end] == choice.span.text


@pytest.mark.parametrize(("answer", "failure"), [
    ("Non-birthing parents get 6 weeks of paid leave.", "number 6"),
    ("Non-birthing parents get 16 days of paid leave.", "'16 day'"),
    ("The Team plan costs $40 per seat.", "amount $40"),
    ("Non-birthing parents at Globex receive 16 weeks of paid leave.", "name 'globex'"),
    ("Non-birthing parents do not receive 16 weeks of fully paid leave.", "'not'"),
    ("Pets receive free lunches every Friday.", "sentence not supported")])
def test_each_kind_of_claim_not_in_the_quote_fails(answer: str, failure: str) -> None:
    quote = "Non-birthing parents receive 16 weeks of fully paid leave. The Team plan costs 40 EUR."
    failures = failed_claims(answer, quote)
    assert any(failure in f for f in failures), failures


def test_claims_that_are_in_the_quote_pass() -> None:
    quote = "Non-birthing parents receive **16-week** leave, about 1,500 hours, at $4,000 a month."
    assert failed_claims("Non-birthing parents receive 16 weeks [1]", quote) == []
    assert failed_claims("1500 hours", quote) == []
    assert failed_claims("$4,000", quote) == []


def test_a_quote_is_one_sentence_so_the_next_sentence_number_does_not_count() -> None:
    hit = Hit("c#0", "pricing.md", "pricing.md", "Pricing", "", "The Team plan costs $12 per "
              "seat. The Business plan costs $25 per seat.", "h", ("public",), 1.0)
    answer = "The Team plan costs $25 per seat."
    quote = quote_for(answer, 1, hit, "How much does the Team plan cost?")
    assert quote is not None and quote.text == "The Team plan costs $12 per seat."
    assert any("$25" in f for f in failed_claims(answer, quote.text))


def test_locate_finds_a_cleaned_sentence_in_the_passage_with_markup() -> None:
    text = "## Duration\n- Birthing parents receive **20 weeks** of fully paid leave.\n- Next."
    start, end = locate("Birthing parents receive 20 weeks of fully paid leave.", text) or (0, 0)
    assert text[start:end] == "Birthing parents receive **20 weeks** of fully paid leave."


# ---- through the pipeline ---------------------------------------------------------------------
def test_extractive_answer_has_a_short_answer_and_a_quote_at_its_offsets(settings: Settings) -> None:
    answer, record = ask(settings, EchoGenerator(), "extractive")
    assert not answer.refused and answer.short_answer == "16 weeks"
    hit = next(h for h in answer.retrieved if h.chunk_id == answer.quote.chunk_id)
    assert hit.text[answer.quote.start:answer.quote.end] == answer.quote.text
    assert "16 weeks" in answer.quote.text.replace("**", "")
    assert answer.verification.outcome == "verified" and answer.verification.source == "extract"
    assert record["short_answer"] == "16 weeks" and record["verification"]["outcome"] == "verified"
    assert schema_problems(answer.to_json()) == []


def test_auto_mode_lets_the_model_choose_a_span_and_records_the_choice(settings: Settings) -> None:
    generator = EchoGenerator(span="fully paid leave")
    answer, record = ask(settings, generator, "auto")
    assert answer.short_answer == "fully paid leave"  # the fake model's (wrong) choice, shown
    assert answer.verification.source == "model-span"
    assert record["span_choice"]["method"] == "model"
    assert record["span_choice"]["candidates"][0][0] == "fully paid leave"
    assert record["prompt"]["purpose"] == "span choice" and QUESTION in record["prompt"]["text"]
    assert generator.prompts and "16 weeks" in generator.prompts[0]


def test_a_generator_that_lies_about_a_number_is_never_shown(settings: Settings) -> None:
    """The lie cites the right passage and is otherwise word for word the policy."""
    liar = EchoGenerator(reply="Non-birthing parents receive 6 weeks of fully paid leave. [1]")
    answer, record = ask(settings, liar, "generative")
    assert "6 weeks" not in answer.answer.replace("16 weeks", "")
    assert answer.short_answer != "6 weeks"
    assert record["output"]["raw"].startswith("Non-birthing parents receive 6 weeks")  # it did lie
    assert answer.verification.outcome == "repaired"
    assert any("number 6" in f for f in answer.verification.failed)
    assert answer.short_answer == "16 weeks" and answer.verification.source == "extract"
    assert record["verification"]["outcome"] == "repaired"


def test_a_lie_with_nothing_verified_to_replace_it_is_refused(settings: Settings) -> None:
    liar = EchoGenerator(reply="Non-birthing parents receive 6 weeks of fully paid leave. [1]")
    answerer = Answerer(replace(settings, mode="generative"), HashEmbedder(), lambda: liar)
    import ragcli.answer.answering as answering

    original = answering.extract_answer
    answering.extract_answer = lambda *args: None  # no sentence covers the question
    try:
        answer = answerer.ask(QUESTION, user="ana", groups=[])
    finally:
        answering.extract_answer = original
    assert answer.refused and answer.refusal_reason.startswith("unverified_claim")
    assert "number 6" in answer.refusal_reason
    assert AuditLog(settings.audit).get(answer.request_id)["verification"]["outcome"] == "refused"


def test_a_true_generated_answer_is_verified(settings: Settings) -> None:
    honest = EchoGenerator(reply="Non-birthing parents receive 16 weeks of fully paid leave. [1]")
    answer, _ = ask(settings, honest, "generative")
    assert answer.verification.outcome == "verified" and answer.verification.source == "model"
    assert answer.short_answer == "16 weeks" and "16 weeks" in answer.quote.text.replace("**", "")


def test_ask_json_carries_short_answer_quote_and_verification(handbook_store: Path,
        cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    liar = EchoGenerator(reply="Non-birthing parents receive 6 weeks of fully paid leave. [1]")
    monkeypatch.setattr(ask_command, "gguf_generator", lambda settings: liar)
    result = CliRunner().invoke(app, ["ask", QUESTION, "--mode", "generative", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["short_answer"] == "16 weeks" and data["verification"]["outcome"] == "repaired"
    assert data["quote"]["chunk_id"] in {c["chunk_id"] for c in data["citations"]}
    assert schema_problems(data) == []
    shown = CliRunner().invoke(app, ["ask", QUESTION, "--mode", "extractive"])
    assert shown.exit_code == 0
    assert shown.stdout.lstrip().startswith("16 weeks")  # the short answer first


@pytest.mark.parametrize(("question", "sentence", "inside"), [
    ("Who must approve a purchase of 20,000 EUR?", "Amount: 10,000 to 50,000; Approval: CFO", True),
    ("Who must approve a purchase of 20,000 EUR?", "Amount: 1,000 to 10,000; Approval: Head", False),
    ("Who approves 500 EUR?", "Amount: Up to 1,000; Approval: Team lead", True),
    ("Who approves 60,000 EUR?", "Amount: Above 50,000; Approval: CFO and CEO", True),
    ("Who approves 60,000 EUR?", "Amount: Up to 1,000; Approval: Team lead", False),
    ("Who approves a purchase?", "Amount: 10,000 to 50,000; Approval: CFO", False)])
def test_a_number_in_the_question_picks_the_range_that_holds_it(question: str, sentence: str,
                                                               inside: bool) -> None:
    from ragcli.answer.extractive import in_range

    assert in_range(question, sentence) is inside


def test_a_code_answer_is_its_best_line_and_passes_the_checks() -> None:
    code = "```bash\nvault login -method=oidc role=engineer\nvault kv get -field=password x\n```"
    choice = choose_span("Which command logs in to Vault with OIDC?", code)
    assert choice is not None and choice.span.text == "vault login -method=oidc role=engineer"
    assert failed_claims(code, code) == [] and failed_claims(choice.span.text, code) == []


def test_a_table_rows_column_names_are_never_the_short_answer() -> None:
    row = "Amount (EUR, excluding VAT): 10,000 to 50,000; Approval needed: CFO"
    question = "Who must approve a purchase of 20,000 EUR?"
    assert rule_spans(question, row)[0].text == "CFO"
    from ragcli.answer.spans import all_spans

    assert {"Amount", "Approval needed", "EUR"}.isdisjoint(s.text for s in all_spans(question, row))
