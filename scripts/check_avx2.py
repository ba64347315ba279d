"""See scripts/check_avx2: does this build give the same answers on an AVX2-only CPU?

The parent builds real prompts (the handbook store, the golden questions, the default settings),
generates natively, then runs the same generations in a child under ``qemu-x86_64 -cpu Haswell``
(AVX2, FMA, F16C; no AVX-512, no VNNI) and with one prefill thread, and compares the outputs byte
for byte; it also scores mode auto's candidate spans (the model's likelihood of each) and compares
the choices and the scores, and embeds the golden questions in the child and compares the vectors.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ragcli.runtimes.embedder import get_embedder
from ragcli.runtimes.generation import LlamaCppGenerator
from ragcli.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def generate(prompts: list[str], settings: Settings, batch_threads: int) -> list[str]:
    generator = LlamaCppGenerator.from_settings(replace(settings, batch_threads=batch_threads))
    return [generator.generate(p, max_tokens=settings.max_tokens, temperature=0.0,
                               seed=settings.seed).text for p in prompts]


def score_spans(jobs: list[dict], settings: Settings, batch_threads: int) -> list[list[float]]:
    """Mode auto's span scores: log-likelihood of each candidate span (the model's choice)."""
    generator = LlamaCppGenerator.from_settings(replace(settings, batch_threads=batch_threads))
    return [generator.score_continuations([tuple(m) for m in job["messages"]], job["spans"])[1]
            for job in jobs]


def child(job: Path) -> None:
    data = json.loads(job.read_text())
    settings = Settings()
    start = time.perf_counter()
    outputs = generate(data["prompts"], settings, settings.batch_threads)
    scores = score_spans(data["spans"], settings, settings.batch_threads)
    vectors = get_embedder(settings.embedder).embed(data["questions"])
    np.save(job.with_suffix(".npy"), vectors)
    job.with_suffix(".out.json").write_text(json.dumps(
        {"outputs": outputs, "scores": scores, "seconds": time.perf_counter() - start}))


def prompts_for(questions: list[str], settings: Settings) -> tuple[list[str], list[dict]]:
    """The generation prompts, and mode auto's span-scoring jobs, for ``questions``."""
    from ragcli.answer.answering import screen_retrieval
    from ragcli.answer.extractive import extract_answer
    from ragcli.answer.prompting import build_prompt
    from ragcli.answer.reading import span_messages
    from ragcli.answer.spans import all_spans
    from ragcli.ingest.indexing import reindex
    from ragcli.search.retrieval import retrieve_configured
    from ragcli.store.store import Store

    embedder = get_embedder(settings.embedder)
    store_path = ROOT / ".ragcli" / "check-avx2-store"
    reindex([ROOT / "corpora" / "handbook"], store_path, embedder)
    store = Store.open(store_path)
    generator = LlamaCppGenerator.from_settings(settings)
    out, spans = [], []
    for question in questions:
        _, hits, _ = screen_retrieval(question, retrieve_configured(store, embedder, question, [],
                                                                    settings))
        out.append(build_prompt(question, hits, render=generator.render,
                                count_tokens=generator.count_tokens,
                                context_tokens=generator.context_tokens,
                                answer_tokens=settings.max_tokens).text)
        extract = extract_answer(question, hits)
        if extract is not None:
            spans.append({"messages": span_messages(question, extract.sentence),
                          "spans": [s.text for s in all_spans(question, extract.sentence)] or
                          [extract.sentence]})
    return out, spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=4, help="golden questions (default 4)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    settings = Settings()
    goldens = [json.loads(x) for x in (ROOT / "goldens" / "handbook.jsonl").read_text().splitlines()]
    questions = [g["question"] for g in goldens if g["expected_answers"]][:args.questions]
    prompts, span_jobs = prompts_for(questions, settings)
    native = generate(prompts, settings, settings.batch_threads)
    one_thread = generate(prompts, settings, 1)
    native_scores = score_spans(span_jobs, settings, settings.batch_threads)
    one_thread_scores = score_spans(span_jobs, settings, 1)
    native_vectors = get_embedder(settings.embedder).embed(questions)
    with tempfile.TemporaryDirectory() as work:
        job = Path(work) / "job.json"
        job.write_text(json.dumps({"prompts": prompts, "questions": questions, "spans": span_jobs}))
        subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, __file__, "--child",
                        str(job)], check=True, stderr=subprocess.DEVNULL)
        emulated = json.loads(job.with_suffix(".out.json").read_text())
        vectors = np.load(job.with_suffix(".npy"))
    print(f"llama.cpp: {LlamaCppGenerator.from_settings(settings).runtime()}")
    print(f"{len(prompts)} prompts, {settings.max_tokens} tokens at most, greedy; "
          f"emulated run {emulated['seconds']:.0f} s")
    same = 0
    for question, a, b, c in zip(questions, native, emulated["outputs"], one_thread, strict=True):
        verdict = "identical" if a == b == c else "DIFFERENT"
        same += a == b == c
        print(f"- {verdict}: {question[:60]!r} -> {a[:60]!r}")
    print(f"outputs identical (native {settings.batch_threads or 'all'} threads, native 1 thread, "
          f"AVX2 emulated): {same}/{len(prompts)}")
    print(f"question vectors, native vs AVX2 emulated: max |diff| "
          f"{float(np.abs(vectors - native_vectors).max()):.2e}")
    chosen_same = 0
    worst = 0.0
    for job, a, b, c in zip(span_jobs, native_scores, emulated["scores"], one_thread_scores,
                            strict=True):
        picks = {job["spans"][int(np.argmax(x))] for x in (a, b, c)}
        chosen_same += len(picks) == 1
        worst = max(worst, float(np.abs(np.array(a) - np.array(b)).max()),
                    float(np.abs(np.array(a) - np.array(c)).max()))
        print(f"- span {'same' if len(picks) == 1 else 'DIFFERENT'}: {sorted(picks)} "
              f"({len(job['spans'])} candidates)")
    print(f"mode auto span choices identical (native, 1 thread, AVX2 emulated): "
          f"{chosen_same}/{len(span_jobs)}; max |score diff| {worst:.2e}")
    sys.exit(0 if same == len(prompts) and chosen_same == len(span_jobs) else 1)


if __name__ == "__main__":
    main()
