"""The extractive reader: windows over passages, span decoding, the best span across passages, its
quote, refusal on a low score, the record and replay. Fast: a rule-based stand-in (fakes.RuleReader)
where a reader runs; the trained reader itself runs in tests/test_real_components.py."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from fakes import HashEmbedder, RuleReader
from ragcli.answer.answering import Answerer
from ragcli.answer.reading import quote_span, readable
from ragcli.answer.replay import replay
from ragcli.audit.trace import AuditLog
from ragcli.errors import ModelChangedError, ModelError
from ragcli.models import Hit
from ragcli.runtimes.finetuned import base_model_dir, load_tokenizer
from ragcli.runtimes.reader import (
    MAX_ANSWER_TOKENS,
    WINDOW_TOKENS,
    ReadSpan,
    Window,
    best_span,
    build_model,
    choose,
    encode_windows,
)
from ragcli.schema import schema_problems
from ragcli.search.screening import REDACTED
from ragcli.settings import Settings

QUESTION = "How many weeks of paid parental leave do non-birthing parents get?"


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return load_tokenizer(base_model_dir())


@pytest.fixture
def settings(tmp_path: Path, handbook_store: Path) -> Settings:
    return Settings(store=tmp_path / "store", audit=tmp_path / "audit.sqlite3", min_confidence=0.3,
                    span_reader="minilm", min_reader_score=-100.0)


def no_model() -> None:
    raise AssertionError("the GGUF model must not be loaded when the reader picks the span")


def answerer(settings: Settings, reader: object | None = None) -> Answerer:
    return Answerer(settings, HashEmbedder(), no_model,  # type: ignore[arg-type]
                    reader_factory=lambda: reader or RuleReader())  # type: ignore[arg-type,return-value]


# ---- windows and spans, pure ---------------------------------------------------------------------
def test_a_long_passage_is_read_in_overlapping_windows_whose_offsets_point_into_it(tokenizer) -> None:  # type: ignore[no-untyped-def]
    passage = " ".join(f"Sentence number {i} says that the value {i} is {i * 7} units." for i in range(120))
    windows = encode_windows(tokenizer, "What is the value 55?", [passage, "A short one."])
    long, short = [w for w in windows if w.passage == 0], [w for w in windows if w.passage == 1]
    assert len(long) > 2 and len(short) == 1
    for window in windows:
        assert len(window.ids) <= WINDOW_TOKENS
        assert len(window.ids) == len(window.type_ids) == window.context_start + len(window.offsets) + 1
        text = [passage, "A short one."][window.passage]
        assert all(0 <= a < b <= len(text) for a, b in window.offsets)
    # consecutive windows overlap, and together they cover the passage
    assert long[1].offsets[0][0] < long[0].offsets[-1][1]
    assert long[0].offsets[0][0] == 0 and long[-1].offsets[-1][1] == len(passage)


def test_a_long_question_is_cut_and_every_window_still_fits(tokenizer) -> None:  # type: ignore[no-untyped-def]
    windows = encode_windows(tokenizer, "why " * 500, ["word " * 1000])
    assert all(len(w.ids) <= WINDOW_TOKENS for w in windows)
    assert windows[0].context_start == 64 + 2


def window(count: int) -> Window:
    return Window(0, (101, 2054, 102, *range(1000, 1000 + count), 102), (0, 0, 0, *(1,) * (count + 1)),
                  3, tuple((i * 2, i * 2 + 1) for i in range(count)))


def test_the_best_span_is_searched_in_the_passage_only_and_scored_against_no_answer() -> None:
    text = "a b c d e f"
    start, end = np.zeros(10), np.zeros(10)
    start[0] = end[0] = 1.0  # no answer
    start[1] = end[1] = 50.0  # the question: never a span
    start[4], end[6] = 5.0, 4.0  # passage tokens 1..3: "b c d"
    span = best_span(window(6), start, end, text)
    assert (span.text, span.score) == ("b c d", 7.0)


def test_a_span_is_never_longer_than_max_answer_tokens() -> None:
    count = MAX_ANSWER_TOKENS + 10
    start, end = np.zeros(count + 4), np.zeros(count + 4)
    start[3], end[3 + count - 1] = 10.0, 10.0  # the whole passage would be best, but is too long
    span = best_span(window(count), start, end, " ".join("x" * count))
    assert span is not None and span.end - span.start <= 2 * MAX_ANSWER_TOKENS


def test_the_best_span_across_passages_ties_to_the_earlier_passage() -> None:
    spans = [ReadSpan(1, 0, 3, "two", 2.5), ReadSpan(0, 4, 7, "one", 2.5), ReadSpan(2, 0, 3, "low", 1.0),
             ReadSpan(0, 0, 0, " ", 9.0)]
    assert choose(spans) == spans[1]
    assert choose([]) is None


def test_the_quote_is_the_sentence_that_holds_the_span_even_across_markup() -> None:
    text = "# Leave\n\nBirthing parents receive 20 weeks. Non-birthing parents receive **16 weeks** of " \
           "fully paid leave. Leave starts at birth."
    hit = Hit("c1", "d", "s", "Leave", "", text, "h", ("public",), 1.0)
    start = text.index("16 weeks")
    shown, quote = quote_span(2, hit, start, start + len("16 weeks"))
    assert shown == "Non-birthing parents receive 16 weeks of fully paid leave."
    assert quote.text == "Non-birthing parents receive **16 weeks** of fully paid leave."
    assert text[quote.start:quote.end] == quote.text and quote.n == 2
    across = text.index("20 weeks")
    _, both = quote_span(1, hit, across, start + 2)  # a span over a sentence boundary
    assert "20 weeks." in both.text and "16" in both.text


def test_redacted_text_is_blanked_to_the_same_length() -> None:
    text = f"Keep this. {REDACTED} And this."
    assert len(readable(text)) == len(text) and "instruction" not in readable(text)


# ---- answering with a reader --------------------------------------------------------------------
def test_mode_auto_answers_with_the_readers_span_its_quote_and_record(settings: Settings) -> None:
    answer = answerer(settings).ask(QUESTION, user="ana", groups=[])
    assert not answer.refused and answer.short_answer == "16 weeks"
    assert answer.verification is not None and answer.verification.source == "reader-span"
    assert answer.quote is not None and "16 weeks" in answer.quote.text
    assert answer.answer.endswith(f"[{answer.quote.n}]")
    record = AuditLog(settings.audit).get(answer.request_id)
    assert record is not None and schema_problems(record, "trace") == []
    assert record["reader"]["id"] == "test-rules" and record["span_choice"]["method"] == "reader"
    assert record["span_choice"]["chosen"] == "16 weeks" and "model" not in record
    assert schema_problems(answer.to_json(), "answer") == []


def test_a_reader_score_below_min_reader_score_is_a_refusal(settings: Settings) -> None:
    answer = answerer(replace(settings, min_reader_score=1000.0)).ask(QUESTION, user="ana", groups=[])
    assert answer.refused and answer.refusal_reason.startswith("low_reader_score:")
    record = AuditLog(settings.audit).get(answer.request_id)
    assert record["span_choice"]["score"] < 1000.0 and schema_problems(record, "trace") == []


def test_span_reader_gguf_keeps_the_models_span_choice(settings: Settings) -> None:
    from fakes import EchoGenerator

    model = Answerer(replace(settings, span_reader="gguf"), HashEmbedder(), lambda: EchoGenerator(),
                     reader_factory=lambda: pytest.fail("no reader with span_reader gguf"))
    answer = model.ask(QUESTION, user="ana", groups=[])
    assert answer.verification is not None and answer.verification.source != "reader-span"


class OtherWeights(RuleReader):
    def record(self) -> dict[str, str]:
        return {**super().record(), "weights_sha256": "1" * 64}


def test_replay_refuses_a_record_whose_reader_changed(settings: Settings,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ragcli.runtimes import reader as reader_module

    answer = answerer(settings).ask(QUESTION, user="ana", groups=[])
    record = AuditLog(settings.audit).get(answer.request_id)
    monkeypatch.setitem(reader_module.READERS, "minilm", RuleReader)
    report = replay(record, against="recorded", embedder=HashEmbedder(),
                    generator_factory=lambda *_: no_model())  # type: ignore[arg-type,return-value]
    assert report.outcome == "identical"
    monkeypatch.setitem(reader_module.READERS, "minilm", OtherWeights)
    with pytest.raises(ModelChangedError, match="reader"):
        replay(record, against="recorded", embedder=HashEmbedder(),
               generator_factory=lambda *_: no_model())  # type: ignore[arg-type,return-value]


def test_weights_trained_on_another_encoder_are_refused(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    weights = tmp_path / "reader.safetensors"
    save_file({"full.qa_outputs.bias": np.zeros(2, dtype=np.float32)}, str(weights),
              metadata={"ragcli.base_sha256": "0" * 64, "ragcli.format": "1"})
    with pytest.raises(ModelError, match="another encoder"):
        build_model(base_model_dir(), weights)


# ---- training data ------------------------------------------------------------------------------
def test_training_labels_point_at_the_answer_tokens(tokenizer) -> None:  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("train_reader", ROOT / "scripts" / "train_reader.py")
    assert spec is not None and spec.loader is not None
    train_reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_reader)
    passage = "The Normans were in Normandy. Rollo agreed to swear fealty in 911 to King Charles III."
    span = train_reader.answer_offset(passage, ["911"])
    windows = encode_windows(tokenizer, "When did Rollo swear fealty?", [passage])
    start, end = train_reader.labelled(windows[0], span)
    first = windows[0].context_start
    assert passage[windows[0].offsets[start - first][0]:windows[0].offsets[end - first][1]] == "911"
    assert train_reader.labelled(windows[0], None) == (0, 0)
    outside = train_reader.answer_offset("Another paragraph altogether.", ["911"])
    assert outside is None


def test_tune_reader_windows_are_what_ask_reads_labelled_with_the_expected_answer(
        settings: Settings, tokenizer) -> None:  # type: ignore[no-untyped-def]
    """ragcli tune --reader: each golden question retrieved as ask retrieves it; the windows of
    the passages holding its expected answer point at it, a must-refuse case's windows at no
    answer, and a case whose answer retrieval does not bring is left out, counted."""
    from ragcli.evaluate.goldens import Golden
    from ragcli.evaluate.tuning import reader_examples
    from ragcli.store.store import Store

    cases = [Golden("leave", QUESTION, expected_answers=("16 weeks",)),
             Golden("absent", "What is the capital of Mongolia?", must_refuse=True),
             Golden("missed", "How many weeks of paid parental leave do parents get?",
                    expected_answers=("purple elephants",))]
    items, counts = reader_examples(cases, Store.open(settings.store), settings, HashEmbedder(),
                                    tokenizer)
    assert counts["answerable cases"] == 1 and counts["absent-topic cases"] == 1
    assert counts["skipped: no expected answer in the passages"] == 1
    answered = [(w, s, e) for w, s, e in items if s]
    assert answered and len(answered) == counts["answer windows"]
    for window, start, end in answered:
        assert window.ids[1:1 + len(tokenizer.encode(QUESTION, add_special_tokens=False).ids)] \
            == tuple(tokenizer.encode(QUESTION, add_special_tokens=False).ids)
        assert tokenizer.decode(list(window.ids[start:end + 1])) == "16 weeks"
    unanswered = [w for w, s, _ in items if not s]
    assert len(unanswered) == counts["no-answer windows"] >= 1  # the absent-topic case's
    wider, more = reader_examples(cases, Store.open(settings.store), settings, HashEmbedder(),
                                  tokenizer, negatives=1.0)  # + its best passage without it
    assert more["no-answer windows"] > counts["no-answer windows"]
    assert more["answer windows"] == counts["answer windows"] and len(wider) > len(items)


def test_span_reader_names_a_reader_file_and_a_missing_one_is_a_model_error(tmp_path: Path) -> None:
    from ragcli.errors import UsageError
    from ragcli.runtimes.reader import get_reader
    from ragcli.settings import load_settings

    chosen = load_settings({"span_reader": str(tmp_path / "mine.safetensors")})
    assert chosen.span_reader.endswith("mine.safetensors")
    with pytest.raises(UsageError, match="or a reader file"):
        load_settings({"span_reader": "bert"})
    with pytest.raises(ModelError, match="are missing"):
        get_reader(str(tmp_path / "mine.safetensors"))


# ---- calibration ---------------------------------------------------------------------------------
def case(score: float | None, short: str, *, absent: bool = False):  # type: ignore[no-untyped-def]
    from ragcli.evaluate.evaluation import CaseResult
    from ragcli.evaluate.goldens import Golden

    golden = Golden(f"g{score}{short}", "q?", expected_answers=() if absent else ("16 weeks",),
                    must_refuse=absent)
    return CaseResult(golden, answer=short, short_answer=short, reader_score=score)


def test_risk_coverage_counts_wrong_answers_at_each_share_answered() -> None:
    from ragcli.evaluate.calibration import reader_sweep, risk_coverage

    results = [case(9.0, "16 weeks"), case(7.0, "16 weeks"), case(5.0, "20 weeks"),
               case(3.0, "16 weeks"), case(1.0, "2 days"), case(6.0, "x", absent=True),
               case(None, "")]  # refused before the reader ran
    sweep = {r["threshold"]: r for r in reader_sweep(results)}  # 6 answerable, 5 of them read
    assert sweep[5.0] == {"threshold": 5.0, "answered": 0.5, "right": 2.0, "wrong": 1.0,
                          "absent_answered": 1.0, "wrong_rate": 1 / 3}
    assert (sweep[1.0]["right"], sweep[1.0]["wrong"], sweep[1.0]["answered"]) == (3.0, 2.0, 5 / 6)
    table = risk_coverage(results, shares=(0.3, 0.4, 1.0))  # 1.0 is out of reach: not a row
    assert [(r["share"], r["threshold"], r["wrong_rate"]) for r in table] == [(0.3, 7.0, 0.0),
                                                                              (0.4, 5.0, 1 / 3)]


def test_the_same_tensors_are_written_as_the_same_bytes(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from ragcli.runtimes.finetuned import weights_metadata, write_weights

    tensors = {"delta.b": np.arange(6, dtype=np.float16).reshape(2, 3), "full.a": np.ones(3, np.float32)}
    write_weights(tensors, tmp_path / "one.safetensors", {"ragcli.format": "1"})
    write_weights(dict(reversed(tensors.items())), tmp_path / "two.safetensors", {"ragcli.format": "1"})
    assert (tmp_path / "one.safetensors").read_bytes() == (tmp_path / "two.safetensors").read_bytes()
    back = load_file(str(tmp_path / "one.safetensors"))
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in tensors.items())
    assert weights_metadata(tmp_path / "one.safetensors") == {"ragcli.format": "1"}
