"""tune: train a LoRA grounding adapter for the GGUF model on this CPU (ragcli/runtimes/tuning.py)."""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ExitCode
from . import render
from .common import ConfigOpt, gguf_generator, progress_bar, settings_from


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
    absent_share: Annotated[float, typer.Option("--absent-share", min=0.0, max=1.0, help="Share "
                            "of the generative examples whose own document is taken out of the "
                            "passages (target: I don't know.).")] = 0.2,
    moved_share: Annotated[float, typer.Option("--moved-share", min=0.0, max=1.0, help="Share "
                           "of the generative examples whose passages are shuffled.")] = 0.25,
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
    from ..evaluate.tuning import compare_adapter, eligible_questions, load_questions, prepare_examples
    from ..runtimes.embedder import get_embedder
    from ..runtimes.tuning import TuneConfig, adapter_metadata, require_packages, write_adapter
    from .evaluate import _calibration_pair

    if absent_share + moved_share > 1:
        raise UsageError(f"--absent-share {absent_share} and --moved-share {moved_share} add up "
                         "to more than 1")
    if eval_mode not in ("generative", "auto"):
        raise UsageError(f"--eval-mode {eval_mode!r}: generative or auto")
    require_packages()
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory")
    evals = [_calibration_pair(spec, "--eval") for spec in eval_set or ()]
    settings = settings_from(config, model=model)
    base = gguf_generator(replace(settings, adapter="none"))
    questions = load_questions(data)
    eligible = eligible_questions(questions, [*(exclude or ()), *(g for g, _ in evals)])
    if len(eligible) < examples + span_examples:
        render.warning(f"{data}: {len(eligible)} questions after exclusions, fewer than "
                       f"{examples + span_examples} asked for; using them all")
    tune_config = TuneConfig(rank=rank, alpha=alpha, top_layers=top_layers,
                             learning_rate=learning_rate, accumulate=accumulate, epochs=epochs,
                             seed=seed)
    embedder = get_embedder(settings.embedder)
    with _bar("building examples", examples + span_examples) as advance:
        built = prepare_examples(data, work, settings, base, embedder, eligible, examples,
                                 span_examples, seed, absent_share=absent_share,
                                 moved_share=moved_share, on_example=advance,
                                 index_progress=progress_bar(False))
    kinds = Counter(e.kind for e in built)
    render.info(f"{len(built)} examples ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))})")
    peft_model, stats = _train(built, base.model_path, work, tune_config)
    write_adapter(peft_model, tune_config, out, metadata=adapter_metadata(
        base, tune_config, kinds, shlex.join(["ragcli", *sys.argv[1:]])))
    render.info(f"adapter written to {out} ({out.stat().st_size / 1e6:.1f} MB); trained "
                f"{stats['steps']} steps in {stats['seconds_this_run']:.0f} s this run, loss "
                f"{stats['loss_first_10']:.3f} -> {stats['loss_last_10']:.3f}")
    if not evals:
        return
    rows, better = compare_adapter(evals, settings, embedder, out, work, eval_mode, eval_limit,
                                   generator_for=gguf_generator,
                                   index_progress=progress_bar(False))
    render.tune_table(rows)
    if better:
        render.info("the adapter is better than the base model on every --eval set")
        return
    render.error("the adapter is not better than the base model on every --eval set "
                 "(F1 must rise and the wrong-answer rate must not)")
    raise typer.Exit(int(ExitCode.TUNE_NOT_BETTER))


def _train(built: list[Any], model_path: Path, work: Path, config: Any) -> tuple[Any, dict]:
    from ..runtimes.tuning import encode, train, training_steps

    encoded = encode(built, model_path)
    render.info(f"training: {len(encoded)} examples, {config.epochs} epoch(s), checkpoint in "
                f"{work / 'checkpoint.pt'}")
    steps = training_steps(len(encoded), config)
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
