"""ragcli tune: training data, the GGUF adapter writer, resuming, and the command end to end.

The fast tests need no torch; the ``real`` ones train a LoRA on the shipped GGUF model for a few
steps, write it as a llama.cpp adapter and check llama.cpp computes what peft computes."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ragcli.cli.app import app
from ragcli.errors import UsageError
from ragcli.evaluate.tuning import (
    IDK,
    Question,
    build_examples,
    excluded_questions,
    gold_span,
    load_questions,
    target_for,
)
from ragcli.runtimes.tuning import permute_rows

runner = CliRunner()

PARAGRAPHS = {
    "Otters#0": ("Otters", "Sea otters eat sea urchins and crabs. An adult sea otter weighs between "
                 "14 and 45 kilograms. They use stones as tools to open shells."),
    "Otters#1": ("Otters", "River otters live in burrows near water. A river otter can hold its "
                 "breath for 8 minutes. Their fur traps air for warmth."),
    "Lighthouses#0": ("Lighthouses", "The Eddystone Lighthouse was first lit in 1698. It stands "
                      "on rocks south of Plymouth. The current tower was built by James Douglass."),
    "Lighthouses#1": ("Lighthouses", "Lighthouse keepers trimmed the wicks every four hours. "
                      "Automation of British lighthouses ended in 1998 with North Foreland."),
}
QUESTIONS = [
    ("q1", "What do sea otters use as tools?", ["stones"], "Otters#0"),
    ("q2", "How long can a river otter hold its breath?", ["8 minutes"], "Otters#1"),
    ("q3", "When was the Eddystone Lighthouse first lit?", ["1698"], "Lighthouses#0"),
    ("q4", "Who built the current Eddystone tower?", ["James Douglass"], "Lighthouses#0"),
    ("q5", "How often did keepers trim the wicks?", ["every four hours"], "Lighthouses#1"),
    ("q6", "Which lighthouse was the last to be automated?", ["North Foreland"], "Lighthouses#1"),
    ("q7", "What do sea otters eat?", ["sea urchins and crabs", "sea urchins"], "Otters#0"),
    ("q8", "Where do river otters live?", ["in burrows near water", "burrows"], "Otters#1"),
]


def training_set(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in PARAGRAPHS.items()))
    (root / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": t, "answers": a}) + "\n" for q, t, a, _ in QUESTIONS))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, _, _, d in QUESTIONS))
    (root / "goldens.jsonl").write_text("".join(json.dumps(row) + "\n" for row in (
        {"id": "q3", "question": "When was the Eddystone Lighthouse first lit?",
         "expected_docs": ["Lighthouses#0"], "expected_answers": ["1698"], "must_cite": True},
        {"id": "g2", "question": "How much does an adult sea otter weigh?",
         "expected_docs": ["Otters#0"], "expected_answers": ["between 14 and 45 kilograms"],
         "must_cite": True})))
    return root


@dataclass(frozen=True)
class FakeHit:
    chunk_id: str
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class FakePrompt:
    text: str
    passages: tuple[FakeHit, ...]


def fake_retriever(question: str) -> list[FakeHit]:
    """Every paragraph, the ones sharing more words with the question first."""
    words = set(question.lower().split())
    hits = [FakeHit(i, i, t, x) for i, (t, x) in PARAGRAPHS.items()]
    return sorted(hits, key=lambda h: -len(words & set(h.text.lower().split())))


def fake_prompt(question: str, hits: list[FakeHit]) -> FakePrompt:
    body = "\n".join(f"[{n}] {h.text}" for n, h in enumerate(hits, 1))
    return FakePrompt(f"{body}\nQuestion: {question}", tuple(hits))


# ----------------------------------------------------------------------------- training data


def test_target_is_the_gold_span_and_the_first_passage_holding_it() -> None:
    assert target_for(["1698"], ["nothing here", "first lit in 1698."]) == "1698 [2]"
    assert target_for(["the moon"], ["nothing here", "nor here"]) == IDK
    # the answer most annotators gave, then the shortest
    assert gold_span(["sea urchins", "sea urchins and crabs", "sea urchins"])[0] == "sea urchins"
    assert gold_span(["burrows near water", "burrows"])[0] == "burrows"


def test_questions_come_with_their_document_and_goldens_are_excluded(tmp_path: Path) -> None:
    data = training_set(tmp_path / "set")
    questions = load_questions(data)
    assert [q.id for q in questions] == [q for q, *_ in QUESTIONS]
    assert questions[2].doc_id == "Lighthouses#0"
    skip = excluded_questions([data / "goldens.jsonl"])
    assert "q3" in skip and "how much does an adult sea otter weigh?" in skip
    with pytest.raises(UsageError, match="qrels/test.tsv|test.tsv is missing"):
        (data / "qrels" / "test.tsv").unlink()
        load_questions(data)


def test_examples_are_seeded_and_include_the_hard_cases(tmp_path: Path) -> None:
    data = training_set(tmp_path / "set")
    questions = load_questions(data) * 10  # more draws for every kind to appear
    questions = [Question(f"{q.id}-{i}", q.text, q.answers, q.doc_id)
                 for i, q in enumerate(questions)]

    def build(seed: int) -> list:
        return build_examples(questions, retrieve=fake_retriever, prompt_for=fake_prompt,
                              top_k=3, count=60, seed=seed, span_count=10,
                              span_prompt_for=lambda q, s: f"Text: {s}\nQuestion: {q}")

    first = build(7)
    assert first == build(7) and first != build(8)
    kinds = {e.kind for e in first}
    assert kinds == {"answer", "moved", "absent", "span"}
    for example in first:
        question = next(q for q in questions if q.id == example.question_id)
        if example.kind == "absent":  # its own article is gone from the passages: no answer
            assert example.target == IDK
            assert all(PARAGRAPHS[c][0] != PARAGRAPHS[question.doc_id][0]
                       for c in example.passages)
        elif example.kind == "span":  # the gold answer inside the sentence the prompt quotes
            assert example.target in question.answers and example.target in example.prompt
        elif example.target != IDK:  # the cited passage holds the span
            span, n = example.target.rsplit(" [", 1)
            assert span in PARAGRAPHS[example.passages[int(n[:-1]) - 1]][1]
    moved = [e for e in first if e.kind == "moved" and e.target != IDK]
    assert any(not e.target.endswith("[1]") for e in moved)  # the answer is not always first


def test_the_shares_of_hard_cases_are_what_was_asked(tmp_path: Path) -> None:
    data = training_set(tmp_path / "set")
    questions = [Question(f"{q.id}-{i}", q.text, q.answers, q.doc_id)
                 for i, q in enumerate(load_questions(data) * 50)]

    def kinds(absent: float, moved: float) -> dict[str, int]:
        built = build_examples(questions, retrieve=fake_retriever, prompt_for=fake_prompt,
                               top_k=3, count=400, seed=1, absent_share=absent,
                               moved_share=moved)
        return {k: sum(e.kind == k for e in built) for k in ("answer", "moved", "absent")}

    assert kinds(0.0, 0.0) == {"answer": 400, "moved": 0, "absent": 0}
    few, many = kinds(0.1, 0.3), kinds(0.3, 0.1)
    assert 20 < few["absent"] < 60 < many["absent"] < 160  # ~40 and ~120 of 400
    assert few["moved"] > many["moved"]


def test_shares_over_one_are_a_usage_error(tmp_path: Path) -> None:
    data = training_set(tmp_path / "set")
    result = runner.invoke(app, ["tune", str(data), "--absent-share", "0.6", "--moved-share",
                                 "0.5"])
    assert result.exit_code == 2
    assert "add up to more than 1" in result.output and "Traceback" not in result.output


def test_rotary_permutation_matches_llama_cpp_layout() -> None:
    """permute_rows is convert_hf_to_gguf's permute; transformers' GGUF loader undoes it with
    the inverse below (its reverse_permute): the two compose to the identity."""
    rng = np.random.default_rng(0)
    heads, dim = 4, 8
    weights = rng.normal(size=(heads * dim, 3))

    def reverse(w: np.ndarray, n: int) -> np.ndarray:
        dim_ = w.shape[0] // n // 2
        return w.reshape(n, dim_, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)

    assert np.array_equal(reverse(permute_rows(weights, heads), heads), weights)
    assert not np.array_equal(permute_rows(weights, heads), weights)


# ----------------------------------------------------------------------------- CLI errors


def test_tune_on_a_directory_that_is_not_a_training_set_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["tune", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert "corpus.jsonl is missing" in result.output
    assert "Traceback" not in result.output


def test_adapter_flags_conflict_and_a_missing_adapter_is_a_model_error(
        tmp_path: Path, cli_env: dict[str, str]) -> None:
    both = runner.invoke(app, ["ask", "q?", "--adapter", "x.gguf", "--no-adapter"])
    assert both.exit_code == 2 and "cannot go together" in both.output
    from ragcli.ingest.indexing import reindex
    from ragcli.runtimes.embedder import get_embedder

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Leave\n\nParents receive sixteen weeks of leave.\n")
    reindex([docs], Path(cli_env["RAGCLI_STORE"]), get_embedder("test-hash"))
    missing = runner.invoke(app, ["ask", "How many weeks of leave?", "--mode", "generative",
                                  "--adapter", str(tmp_path / "nope.gguf")])
    assert missing.exit_code == 7, missing.output
    assert "adapter file not found" in missing.output


# ----------------------------------------------------------------------------- real training


def _tiny_examples(tmp_path: Path) -> list:
    from ragcli.runtimes.tuning import Example

    rng = random.Random(0)
    out = []
    for qid, question, answers, doc in QUESTIONS:
        others = [d for d in PARAGRAPHS if d != doc]
        rng.shuffle(others)
        passages = [doc, *others[:1]]
        body = "\n".join(f"[{n}] {PARAGRAPHS[d][1]}" for n, d in enumerate(passages, 1))
        prompt = (f"<|im_start|>user\nPassages:\n{body}\n\nQuestion: {question}<|im_end|>\n"
                  "<|im_start|>assistant\n")
        out.append(Example(qid, "answer", prompt, f"{answers[0]} [1]", tuple(passages)))
    return out


@pytest.mark.real
def test_lora_trains_resumes_and_llama_cpp_computes_what_peft_computes(tmp_path: Path) -> None:
    """A few steps at a high learning rate; the adapter written as GGUF, loaded by llama.cpp,
    moves the logits as peft's LoRA does (q/k rows permuted right), and an interrupted run
    resumed from its checkpoint ends with the same weights as an uninterrupted one."""
    pytest.importorskip("peft")
    import torch
    from llama_cpp import Llama

    from ragcli.runtimes.generation import default_model_path
    from ragcli.runtimes.tuning import TuneConfig, encode, lora_tensors, train, write_adapter

    model_path = default_model_path()
    encoded = encode(_tiny_examples(tmp_path), model_path)
    config = TuneConfig(rank=4, alpha=8.0, top_layers=4, learning_rate=5e-3, accumulate=2,
                        warmup_steps=0)
    whole, stats = train(encoded, model_path, tmp_path / "whole", config)
    assert stats["steps"] == 4 and stats["loss_last_10"] == stats["loss_last_10"]  # not NaN
    train(encoded, model_path, tmp_path / "split", config, stop_after=2)
    resumed, _ = train(encoded, model_path, tmp_path / "split", config)
    a, b = lora_tensors(whole), lora_tensors(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    adapter = tmp_path / "adapter.gguf"
    write_adapter(whole, config, adapter, metadata={"base_sha256": "x"})
    ids, prompt_tokens = encoded[0]
    with torch.no_grad():
        peft_logits = whole(input_ids=torch.tensor([ids[:prompt_tokens]])).logits[0, -1].numpy()
        with whole.disable_adapter():
            base_logits = whole(input_ids=torch.tensor([ids[:prompt_tokens]])).logits[0, -1].numpy()

    def llama_logits(lora: Path | None) -> np.ndarray:
        llama = Llama(model_path=str(model_path), n_ctx=512, logits_all=True, verbose=False,
                      n_threads=1, lora_path=str(lora) if lora else None)
        llama.eval(ids[:prompt_tokens])
        return np.asarray(llama.scores[prompt_tokens - 1], dtype=np.float64)

    with_adapter, without = llama_logits(adapter), llama_logits(None)
    moved_by_peft = peft_logits - base_logits
    moved_by_llama = with_adapter - without
    assert np.abs(moved_by_peft).max() > 1.0  # the adapter changes the model
    # the same direction: a wrong q/k layout or a transposed A/B gives near-zero correlation
    assert np.corrcoef(moved_by_peft, moved_by_llama)[0, 1] > 0.95


@pytest.mark.real
def test_tune_command_end_to_end(tmp_path: Path) -> None:
    """Examples from the real retriever, training, the GGUF adapter, base vs adapter on a golden
    set: the whole command on a tiny set, then the adapter used by ask and recorded."""
    pytest.importorskip("peft")
    data = training_set(tmp_path / "set")
    out = tmp_path / "adapter.gguf"
    result = runner.invoke(app, [
        "tune", str(data), "--out", str(out), "--work", str(tmp_path / "work"),
        "--eval", f"{data / 'goldens.jsonl'}={data / 'corpus.jsonl'}", "--eval-limit", "2",
        "--examples", "5", "--span-examples", "2", "--accumulate", "4", "--rank", "2",
        "--top-layers", "2"])
    assert result.exit_code in (0, 18), result.output
    assert "base model vs adapter" in result.stdout
    examples = [json.loads(x) for x in (tmp_path / "work" / "examples.jsonl").read_text().splitlines()]
    assert "q3" not in {e["question_id"] for e in examples}  # an --eval golden: never trained on
    # 7 questions left: 5 in the generative prompt, up to 2 span prompts (when the sentence is found)
    assert sum(e["kind"] != "span" for e in examples) == 5
    assert 5 <= len(examples) <= 7
    import gguf

    reader = gguf.GGUFReader(str(out))
    names = {t.name for t in reader.tensors}
    assert "blk.29.attn_q.weight.lora_a" in names and "blk.27.attn_q.weight.lora_a" not in names
    fields = {f.name for f in reader.fields.values()}
    assert {"adapter.type", "adapter.lora.alpha", "ragcli.base_sha256", "ragcli.command"} <= fields
