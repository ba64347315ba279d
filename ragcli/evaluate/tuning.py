"""What ``ragcli tune`` learns from and how it decides (the training itself is runtimes/tuning.py).

Examples come from questions with gold answers asked of a store of their corpus through the real
retriever, screening and prompt builder (byte for byte what ``ask`` gives the model), and an
adapter is kept only if the eval of golden sets says it is better. Both answer questions in
process, so they sit with evaluation, above answering; the LoRA training and the GGUF adapter
writer sit with the other runtimes, below it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..runtimes.tuning import Example

IDK = "I don't know."


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    answers: tuple[str, ...]
    doc_id: str  # the document that answers it (qrels)


def load_questions(data: Path) -> list[Question]:
    """queries.jsonl (``_id``, ``text``, ``answers``) joined with qrels/test.tsv (query -> doc)."""
    queries = data / "queries.jsonl"
    qrels = data / "qrels" / "test.tsv"
    for path in (data / "corpus.jsonl", queries, qrels):
        if not path.is_file():
            raise UsageError(f"{data} is not a training set: {path.name} is missing (a BEIR-layout "
                             "directory: corpus.jsonl, queries.jsonl with answers, qrels/test.tsv)")
    doc_of: dict[str, str] = {}
    for line in qrels.read_text(encoding="utf-8").splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 2:
            doc_of.setdefault(parts[0], parts[1])
    out = []
    for n, line in enumerate(queries.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UsageError(f"{queries}:{n}: not JSON") from None
        answers = tuple(str(a) for a in row.get("answers") or () if str(a).strip())
        qid = str(row.get("_id", ""))
        if answers and qid in doc_of:
            out.append(Question(qid, str(row["text"]), answers, doc_of[qid]))
    if not out:
        raise UsageError(f"{queries} has no question with answers and a qrels entry")
    return out


def excluded_questions(goldens: Iterable[Path]) -> set[str]:
    """Ids and normalised texts of every question in these golden sets: never trained on."""
    out: set[str] = set()
    for path in goldens:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out.add(str(row.get("id", "")))
                out.add(" ".join(str(row.get("question", "")).lower().split()))
    out.discard("")
    return out


def gold_span(answers: Sequence[str]) -> list[str]:
    """The gold answers, the one most annotators gave first (ties: the shortest)."""
    counts = Counter(answers)
    return sorted(counts, key=lambda a: (-counts[a], len(a), a))


def target_for(answers: Sequence[str], texts: Sequence[str]) -> str:
    """``span [n]`` for the first passage holding a gold answer, else ``I don't know.``."""
    for n, text in enumerate(texts, 1):
        for answer in gold_span(answers):
            if answer in text:
                return f"{answer.strip()} [{n}]"
    return IDK


def build_examples(questions: Sequence[Question], *, retrieve: Callable[[str], Sequence[Any]],
                   prompt_for: Callable[[str, Sequence[Any]], Any], top_k: int, count: int,
                   seed: int, absent_share: float = 0.2, moved_share: float = 0.25,
                   span_count: int = 0, span_prompt_for: Callable[[str, str], str] | None = None,
                   on_example: Callable[[], None] | None = None) -> list[Example]:
    """``count`` examples from ``questions`` (a seeded sample). ``retrieve(question)`` gives the
    screened hits of the real retriever (more than ``top_k``); ``prompt_for(question, hits)`` the
    Prompt ask would build. Then ``span_count`` examples of mode auto's span prompt
    (``span_prompt_for(question, sentence)``, the rendered prompt): the sentence of the answering
    passage that holds the gold answer, the gold answer as the target (what the scorer rates)."""
    rng = random.Random(seed)
    pool = list(questions)
    rng.shuffle(pool)
    out: list[Example] = []
    for q in pool[count:count + span_count] if span_prompt_for is not None else ():
        for hit in retrieve(q.text):
            if hit.doc_id != q.doc_id:
                continue
            found = _answer_sentence(q.answers, hit.text)
            if found is not None:
                sentence, answer = found
                assert span_prompt_for is not None  # the loop runs only then
                out.append(Example(q.id, "span", span_prompt_for(q.text, sentence), answer,
                                   (hit.chunk_id,)))
                if on_example is not None:
                    on_example()
                break
    for q in pool[:count]:
        draw = rng.random()
        hits = list(retrieve(q.text))
        kind = "answer"
        if draw < absent_share:
            own = {h.title for h in hits if h.doc_id == q.doc_id}
            hits = [h for h in hits if h.doc_id != q.doc_id and h.title not in own]
            kind = "absent"
        hits = hits[:top_k]
        if kind == "answer" and draw < absent_share + moved_share and len(hits) > 1:
            rng.shuffle(hits)
            kind = "moved"
        prompt = prompt_for(q.text, hits)
        texts = [h.text for h in prompt.passages]
        target = IDK if kind == "absent" else target_for(q.answers, texts)
        out.append(Example(q.id, kind, prompt.text, target,
                           tuple(h.chunk_id for h in prompt.passages)))
        if on_example is not None:
            on_example()
    return out


def _answer_sentence(answers: Sequence[str], text: str) -> tuple[str, str] | None:
    """The first sentence of ``text`` holding a gold answer (of at most six words, the longest
    span mode auto scores), and that answer."""
    from ..answer.guardrails import split_sentences

    for sentence in split_sentences(" ".join(text.split())):
        for answer in gold_span(answers):
            if len(answer.split()) <= 6 and answer.strip() and answer.strip() in sentence:
                return sentence, answer.strip()
    return None


def save_examples(examples: Sequence[Example], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(asdict(e)) + "\n" for e in examples), encoding="utf-8")
    os.replace(tmp, path)


def load_examples(path: Path) -> list[Example]:
    return [Example(**{**row, "passages": tuple(row.get("passages", ()))})
            for row in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if row]


# --------------------------------------------------------------------------- training


def prepare_examples(data: Path, work: Path, settings: Any, base: Any, embedder: Any,
                     eligible: Sequence[Question], count: int, span_count: int, seed: int, *,
                     absent_share: float = 0.2, moved_share: float = 0.25,
                     on_example: Callable[[], None] | None = None,
                     index_progress: Callable[[int, int], None] | None = None) -> list[Example]:
    """Build the examples through a store of ``data``'s corpus (in ``work``), or read the ones a
    previous run with the same inputs (questions, counts, seed, model, settings, corpus) built."""
    from dataclasses import replace

    from ..answer.answering import screen_retrieval
    from ..answer.prompting import build_prompt
    from ..answer.reading import span_messages
    from ..search.retrieval import retrieve_configured
    from .calibration import corpus_store

    key = hashlib.sha256(json.dumps({
        "questions": [q.id for q in eligible], "count": count, "span": span_count, "seed": seed,
        **({} if (absent_share, moved_share) == (0.2, 0.25) else  # the key examples had before
           {"shares": [absent_share, moved_share]}),
        "model": base.model_sha256(), "settings": settings.fingerprint(),
        "corpus": (data / "corpus.jsonl").stat().st_size}, sort_keys=True).encode()).hexdigest()
    cached = work / "examples.jsonl"
    key_file = work / "examples.key"
    if cached.is_file() and key_file.is_file() and key_file.read_text().strip() == key:
        return load_examples(cached)
    store = corpus_store(data / "corpus.jsonl", work / "store", embedder, index_progress)
    wide = replace(settings, store=work / "store", top_k=max(12, settings.top_k))

    def retrieve(question: str) -> Any:
        return screen_retrieval(question, retrieve_configured(store, embedder, question, [],
                                                              wide))[1]

    def prompt_for(question: str, hits: Any) -> Any:
        return build_prompt(question, hits, render=base.render, count_tokens=base.count_tokens,
                            context_tokens=base.context_tokens, answer_tokens=settings.max_tokens)

    built = build_examples(eligible, retrieve=retrieve, prompt_for=prompt_for,
                           top_k=settings.top_k, count=count, seed=seed, span_count=span_count,
                           absent_share=absent_share, moved_share=moved_share,
                           on_example=on_example,
                           span_prompt_for=lambda q, s: base.render(span_messages(q, s)))
    save_examples(built, cached)
    key_file.write_text(key + "\n")
    return built


def compare_adapter(evals: Sequence[tuple[Path, Path]], settings: Any, embedder: Any,
                    adapter: Path, work: Path, mode: str, limit: int,
                    generator_for: Callable[[Any], Any],
                    index_progress: Callable[[int, int], None] | None = None,
                    ) -> tuple[list[dict[str, Any]], bool]:
    """Each (golden set, corpus) answered without and with the adapter (``generator_for(settings)``
    builds the model): one row each, and whether the adapter is better: F1 up on some set, down on
    none, and the wrong-answer rate up on none."""
    common = {"mode": mode, "span_reader": "gguf"}  # auto: the model's span choice
    return compare_settings(evals, settings, embedder, work, limit, generator_for,
                            [("base", {**common, "adapter": "none"}),
                             ("adapter", {**common, "adapter": str(adapter)})], index_progress)


def compare_settings(evals: Sequence[tuple[Path, Path]], settings: Any, embedder: Any,
                     work: Path, limit: int, generator_for: Callable[[Any], Any],
                     variants: Sequence[tuple[str, dict[str, Any]]],
                     index_progress: Callable[[int, int], None] | None = None,
                     ) -> tuple[list[dict[str, Any]], bool]:
    """Each (golden set, corpus) answered under each of the two ``variants`` (a label and the
    settings it changes), each corpus in a store of its own under ``work``: one row each, and
    whether the second is better than the first on every set (:func:`better_overall`)."""
    from dataclasses import replace
    from functools import partial

    from ..answer.answering import Answerer
    from .calibration import corpus_store
    from .evaluation import evaluate
    from .goldens import load_goldens, set_name

    rows = []
    verdicts = []
    for goldens, corpus in evals:
        name = set_name(goldens)
        store = corpus_store(corpus, work / "eval" / name, embedder, index_progress)
        cases = load_goldens(goldens)[:limit or None]
        pair = []
        for label, changes in variants:
            run = replace(settings, store=store.path, audit=work / "eval-audit.sqlite3", **changes)
            answerer = Answerer(run, embedder, partial(generator_for, run))
            start = time.perf_counter()
            metrics = evaluate(cases, answerer).metrics
            rows.append({"set": name, "model": label, "cases": len(cases),
                         "seconds": time.perf_counter() - start, **metrics})
            pair.append(metrics)
        verdicts.append(verdict(*pair))
    return rows, better_overall(verdicts)


def verdict(base: dict[str, float], tuned: dict[str, float]) -> tuple[bool, bool]:
    """(F1 rose, neither F1 fell nor the wrong-answer rate rose) from ``base`` to ``tuned``."""
    f1 = (tuned.get("token_f1", 0.0), base.get("token_f1", 0.0))
    wrong = (tuned.get("wrong_answer_rate", 0.0), base.get("wrong_answer_rate", 0.0))
    return f1[0] > f1[1], f1[0] >= f1[1] and wrong[0] <= wrong[1]


def better_overall(verdicts: Sequence[tuple[bool, bool]]) -> bool:
    """Better on every set: F1 up on some, down on none, the wrong-answer rate up on none."""
    return any(up for up, _ in verdicts) and all(ok for _, ok in verdicts)


def eligible_questions(questions: Sequence[Question], exclude: Iterable[Path]) -> list[Question]:
    """The training questions that are not in any of the ``exclude`` golden sets (by id or by
    normalised text): no example may be a question an evaluation asks."""
    skip = excluded_questions(exclude)
    return [q for q in questions if q.id not in skip and " ".join(q.text.lower().split())
            not in skip]


# --------------------------------------------------------------------------- the reader


def reader_examples(cases: Sequence[Any], store: Any, settings: Any, embedder: Any,
                    tokenizer: Any, *, negatives: float = 0.0, seed: int = 0,
                    ) -> tuple[list[tuple[Any, int, int]], dict[str, int]]:
    """Training windows for the extractive reader from golden ``cases`` (``ragcli tune
    --reader``), read exactly as ``ask`` reads them: the case's question retrieved under its
    groups through the configured retrieval and screening, each of the passages the reader
    would read cut into its windows. The windows of a passage holding an expected answer (the
    first found, exact case first) are labelled with it (a window it is not wholly inside, with
    no answer), and every window of a must-refuse case with no answer; for a ``negatives`` share
    of the answerable cases (seeded) the best-ranked passage without the answer too, with no
    answer. ``negatives`` is 0 by default: on the handbook (docs/answers.md) 0.35, the shipped
    reader's own mixture, made the tuned reader refuse more and answer worse. An answerable
    case whose passages hold no expected answer is skipped (retrieval missed it: nothing for
    the reader to learn)."""
    import random

    from ..answer.answering import screen_retrieval
    from ..answer.reading import readable
    from ..runtimes.reader import encode_windows
    from ..runtimes.training import answer_offset, labelled
    from ..search.retrieval import retrieve_configured

    rng = random.Random(seed)
    items: list[tuple[Any, int, int]] = []
    counts: Counter[str] = Counter()
    for case in cases:
        found = retrieve_configured(store, embedder, case.question, list(case.groups), settings)
        texts = [readable(hit.text) for hit in screen_retrieval(case.question, found)[1]]
        spans = [None if case.must_refuse else answer_offset(text, case.expected_answers)
                 for text in texts]
        if not case.must_refuse and (not case.expected_answers or not any(spans)):
            counts["skipped: no expected answer in the passages"] += 1
            continue
        counts["absent-topic cases" if case.must_refuse else "answerable cases"] += 1
        read = set(range(len(texts)))
        if not case.must_refuse:
            read = {n for n, span in enumerate(spans) if span is not None}
            without = [n for n, span in enumerate(spans) if span is None]
            if without and rng.random() < negatives:
                read.add(without[0])
        for window in encode_windows(tokenizer, case.question, texts):
            if window.passage not in read:
                continue
            start, end = labelled(window, spans[window.passage])
            items.append((window, start, end))
            counts["answer windows" if start else "no-answer windows"] += 1
    return items, dict(counts)


def compare_readers(evals: Sequence[tuple[Path, Path]], settings: Any, embedder: Any,
                    tuned: Path, work: Path, limit: int, generator_for: Callable[[Any], Any],
                    index_progress: Callable[[int, int], None] | None = None,
                    ) -> tuple[list[dict[str, Any]], bool]:
    """Each (golden set, corpus) answered in mode auto by the current reader (``span_reader``:
    the shipped one, or the file it names) and by ``tuned``: one row each, and whether the tuned
    reader is better (compare_adapter's rule: F1 up on some set, down on none, the wrong-answer
    rate up on none)."""
    current = settings.span_reader if settings.span_reader != "gguf" else "minilm"
    common = {"mode": "auto", "route": "local"}
    return compare_settings(evals, settings, embedder, work, limit, generator_for,
                            [("current", {**common, "span_reader": current}),
                             ("tuned", {**common, "span_reader": str(tuned)})], index_progress)
