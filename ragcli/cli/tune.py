"""tune: train a LoRA grounding adapter for the GGUF model on this CPU (ragcli/tuning.py)."""

from __future__ import annotations

import functools
import hashlib
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ExitCode
from . import render
from .common import ConfigOpt, gguf_generator, settings_from


def tune(
    data: Annotated[Path, typer.Argument(help="Training questions: a BEIR-layout directory "
                    "(corpus.jsonl, queries.jsonl with 'answers', qrels/test.tsv).",
                    show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="The adapter file to write (GGUF).")] =
        Path(".ragcli/tune/adapter.gguf"),
    work: Annotated[Path, typer.Option("--work", help="Working directory: the training store, "
                    "examples, checkpoint (an interrupted run resumes from it).")] =
        Path(".ragcli/tune"),
    exclude: Annotated[list[Path] | None, typer.Option(
        "--exclude", metavar="GOLDENS", show_default=False,
        help="A golden set whose questions are never trained on (repeat; every --eval set is "
        "excluded too).")] = None,
    eval_set: Annotated[list[str] | None, typer.Option(
        "--eval", metavar="GOLDENS=CORPUS", show_default=False,
        help="After training, answer this golden set (about that corpus) with the base model and "
        "with the adapter, and compare (repeat).")] = None,
    eval_mode: Annotated[str, typer.Option("--eval-mode", help="The mode --eval runs: generative "
                         "or auto.")] = "generative",
    eval_limit: Annotated[int, typer.Option("--eval-limit", min=0, help="Only the first N cases "
                          "of each --eval set (0: all).")] = 0,
    examples: Annotated[int, typer.Option("--examples", min=1, help="Examples in ask's "
                        "generative prompt (with shuffled and answer-less passages).")] = 1200,
    span_examples: Annotated[int, typer.Option("--span-examples", min=0, help="Examples in mode "
                             "auto's span prompt.")] = 800,
    seed: Annotated[int, typer.Option("--seed", help="Seeds sampling, LoRA init, order.")] = 0,
    rank: Annotated[int, typer.Option("--rank", min=1, help="LoRA rank.")] = 16,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, help="LoRA alpha.")] = 32.0,
    top_layers: Annotated[int, typer.Option("--top-layers", min=1, help="Adapt only the last N "
                          "transformer blocks.")] = 12,
    learning_rate: Annotated[float, typer.Option("--learning-rate", min=0.0)] = 5e-4,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 1,
    accumulate: Annotated[int, typer.Option("--accumulate", min=1, help="Examples per "
                          "optimizer step.")] = 8,
    model: Annotated[Path | None, typer.Option("--model", help="GGUF model to adapt [default: "
                     "the shipped SmolLM2-135M-Instruct]", show_default=False)] = None,
    config: ConfigOpt = None,
) -> None:
    """Train a LoRA adapter that teaches the model to answer from its passages (exit 0 better
    than the base model on every --eval set, 18 not better). Needs pip install 'ragcli[tune]'."""
    from ..errors import UsageError
    from ..tuning import TuneConfig, excluded_questions, load_questions, require_packages
    from .evaluate import _calibration_pair

    if eval_mode not in ("generative", "auto"):
        raise UsageError(f"--eval-mode {eval_mode!r}: generative or auto")
    require_packages()
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory")
    evals = [_calibration_pair(spec, "--eval") for spec in eval_set or ()]
    settings = settings_from(config, model=model)
    base = gguf_generator(replace(settings, adapter="none"))
    questions = load_questions(data)
    skip = excluded_questions([*(exclude or ()), *(g for g, _ in evals)])
    eligible = [q for q in questions if q.id not in skip and " ".join(q.text.lower().split())
                not in skip]
    if len(eligible) < examples + span_examples:
        render.warning(f"{data}: {len(eligible)} questions after exclusions, fewer than "
                       f"{examples + span_examples} asked for; using them all")
    tune_config = TuneConfig(rank=rank, alpha=alpha, top_layers=top_layers,
                             learning_rate=learning_rate, accumulate=accumulate, epochs=epochs,
                             seed=seed)
    from ..embedder import get_embedder

    embedder = get_embedder(settings.embedder)
    built = _examples(data, work, settings, base, embedder, eligible, examples, span_examples, seed)
    kinds: dict[str, int] = {}
    for e in built:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    render.info(f"{len(built)} examples ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))})")
    peft_model, stats = _train(built, base.model_path, work, tune_config)
    from ..tuning import write_adapter

    write_adapter(peft_model, tune_config, out, metadata={
        "base_model": base.model_path.name, "base_sha256": base.model_sha256(),
        "config": json.dumps(tune_config.__dict__, default=list, sort_keys=True),
        "examples": json.dumps(kinds, sort_keys=True),
        "command": shlex.join(["ragcli", *sys.argv[1:]])})
    render.info(f"adapter written to {out} ({out.stat().st_size / 1e6:.1f} MB); trained "
                f"{stats['steps']} steps in {stats['seconds_this_run']:.0f} s this run, loss "
                f"{stats['loss_first_10']:.3f} -> {stats['loss_last_10']:.3f}")
    if not evals:
        return
    rows, better = _compare(evals, settings, embedder, out, work, eval_mode, eval_limit)
    render.tune_table(rows)
    if better:
        render.info("the adapter is better than the base model on every --eval set")
        return
    render.error("the adapter is not better than the base model on every --eval set "
                 "(F1 must rise and the wrong-answer rate must not)")
    raise typer.Exit(int(ExitCode.TUNE_NOT_BETTER))


def _examples(data: Path, work: Path, settings: Any, base: Any, embedder: Any,
              eligible: list[Any], count: int, span_count: int, seed: int) -> list[Any]:
    """Build the examples (through a store of ``data``'s corpus), or read the ones a previous run
    with the same inputs built."""
    from ..answering import screen_retrieval
    from ..prompting import build_prompt
    from ..reading import span_messages
    from ..retrieval import retrieve_configured
    from ..tuning import build_examples, load_examples, save_examples
    from .evaluate import _corpus_store

    key = hashlib.sha256(json.dumps({
        "questions": [q.id for q in eligible], "count": count, "span": span_count, "seed": seed,
        "model": base.model_sha256(), "settings": settings.fingerprint(),
        "corpus": (data / "corpus.jsonl").stat().st_size}, sort_keys=True).encode()).hexdigest()
    cached = work / "examples.jsonl"
    key_file = work / "examples.key"
    if cached.is_file() and key_file.is_file() and key_file.read_text().strip() == key:
        return load_examples(cached)
    store = _corpus_store(data / "corpus.jsonl", work / "store", embedder, False)
    wide = replace(settings, store=work / "store", top_k=max(12, settings.top_k))

    def retrieve(question: str) -> Any:
        return screen_retrieval(question, retrieve_configured(store, embedder, question, [],
                                                              wide))[1]

    def prompt_for(question: str, hits: Any) -> Any:
        return build_prompt(question, hits, render=base.render, count_tokens=base.count_tokens,
                            context_tokens=base.context_tokens, answer_tokens=settings.max_tokens)

    with _bar("building examples", count + span_count) as advance:
        built = build_examples(eligible, retrieve=retrieve, prompt_for=prompt_for,
                               top_k=settings.top_k, count=count, seed=seed,
                               span_count=span_count, on_example=advance,
                               span_prompt_for=lambda q, s: base.render(span_messages(q, s)))
    save_examples(built, cached)
    key_file.write_text(key + "\n")
    return built


def _train(built: list[Any], model_path: Path, work: Path, config: Any) -> tuple[Any, dict]:
    from ..tuning import encode, train

    encoded = encode(built, model_path)
    render.info(f"training: {len(encoded)} examples, {config.epochs} epoch(s), checkpoint in "
                f"{work / 'checkpoint.pt'}")
    steps = -(-len(encoded) * config.epochs // config.accumulate)
    with _bar("training", steps) as advance:
        last = [0]

        def progress(step: int, total: int, loss: float) -> None:
            advance(step - last[0])
            last[0] = step
            if not sys.stderr.isatty() and (step % 10 == 0 or step == total):
                render.info(f"step {step}/{total} loss {loss:.3f}")

        return train(encoded, model_path, work, config, progress=progress)


class _bar:
    """A rich progress bar on a terminal; nothing elsewhere (tune prints step lines instead)."""

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total = what, total
        self.progress: Any = None

    def __enter__(self) -> Any:
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.progress = Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=render.stderr())
            task = self.progress.add_task(self.what, total=self.total)
            self.progress.start()
            return lambda n=1: self.progress.advance(task, n)
        return lambda n=1: None

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _compare(evals: list[tuple[Path, Path]], settings: Any, embedder: Any, adapter: Path,
             work: Path, mode: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Each --eval set answered without and with the adapter: one row each, and whether the
    adapter is better (F1 up on some set, down on none; wrong-answer rate up on none)."""
    from ..answering import Answerer
    from ..evaluation import evaluate, load_goldens
    from .evaluate import _corpus_store, _set_name

    rows = []
    verdicts = []
    for goldens, corpus in evals:
        name = _set_name(goldens)
        store = _corpus_store(corpus, work / "eval" / name, embedder, False)
        cases = load_goldens(goldens)[:limit or None]
        pair = []
        for label, choice in (("base", "none"), ("adapter", str(adapter))):
            run = replace(settings, store=store.path, mode=mode, adapter=choice,
                          audit=work / "eval-audit.sqlite3")
            answerer = Answerer(run, embedder, functools.partial(gguf_generator, run))
            start = time.perf_counter()
            metrics = evaluate(cases, answerer).metrics
            rows.append({"set": name, "model": label, "cases": len(cases),
                         "seconds": time.perf_counter() - start, **metrics})
            pair.append(metrics)
        base, tuned = pair
        f1 = (tuned.get("token_f1", 0.0), base.get("token_f1", 0.0))
        wrong = (tuned.get("wrong_answer_rate", 0.0), base.get("wrong_answer_rate", 0.0))
        verdicts.append((f1[0] > f1[1], f1[0] >= f1[1] and wrong[0] <= wrong[1]))
    better = any(up for up, _ in verdicts) and all(ok for _, ok in verdicts)
    return rows, better
