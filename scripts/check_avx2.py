"""See scripts/check_avx2: does this build give the same answers on an AVX2-only CPU?

The parent builds real prompts (the handbook store, the golden questions, the default settings),
generates natively, then runs the same generations in a child under ``qemu-x86_64 -cpu Haswell``
(AVX2, FMA, F16C; no AVX-512, no VNNI) and with one prefill thread, and compares the outputs byte
for byte; it also embeds the golden questions in the child and compares the vectors.
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

from ragcli.embedder import get_embedder
from ragcli.generation import LlamaCppGenerator
from ragcli.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def generate(prompts: list[str], settings: Settings, batch_threads: int) -> list[str]:
    generator = LlamaCppGenerator.from_settings(replace(settings, batch_threads=batch_threads))
    return [generator.generate(p, max_tokens=settings.max_tokens, temperature=0.0,
                               seed=settings.seed).text for p in prompts]


def child(job: Path) -> None:
    data = json.loads(job.read_text())
    settings = Settings()
    start = time.perf_counter()
    outputs = generate(data["prompts"], settings, settings.batch_threads)
    vectors = get_embedder(settings.embedder).embed(data["questions"])
    np.save(job.with_suffix(".npy"), vectors)
    job.with_suffix(".out.json").write_text(json.dumps(
        {"outputs": outputs, "seconds": time.perf_counter() - start}))


def prompts_for(questions: list[str], settings: Settings) -> list[str]:
    from ragcli.answering import screen_retrieval
    from ragcli.indexing import reindex
    from ragcli.prompting import build_prompt
    from ragcli.retrieval import retrieve_configured
    from ragcli.store import Store

    embedder = get_embedder(settings.embedder)
    store_path = ROOT / ".ragcli" / "check-avx2-store"
    reindex([ROOT / "corpora" / "handbook"], store_path, embedder)
    store = Store.open(store_path)
    generator = LlamaCppGenerator.from_settings(settings)
    out = []
    for question in questions:
        _, hits, _ = screen_retrieval(question, retrieve_configured(store, embedder, question, [],
                                                                    settings))
        out.append(build_prompt(question, hits, render=generator.render,
                                count_tokens=generator.count_tokens,
                                context_tokens=generator.context_tokens,
                                answer_tokens=settings.max_tokens).text)
    return out


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
    prompts = prompts_for(questions, settings)
    native = generate(prompts, settings, settings.batch_threads)
    one_thread = generate(prompts, settings, 1)
    native_vectors = get_embedder(settings.embedder).embed(questions)
    with tempfile.TemporaryDirectory() as work:
        job = Path(work) / "job.json"
        job.write_text(json.dumps({"prompts": prompts, "questions": questions}))
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
    sys.exit(0 if same == len(prompts) else 1)


if __name__ == "__main__":
    main()
