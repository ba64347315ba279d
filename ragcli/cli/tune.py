"""tune: train a LoRA grounding adapter for the GGUF model on this CPU (ragcli/runtimes/tuning.py),
or with ``--reader`` fine-tune the extractive reader on your own golden questions
(runtimes/training.py)."""

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
                    "(corpus.jsonl, queries.jsonl with 'answers', qrels/test.tsv); with --reader "
                    "a golden set (JSONL, expected_answers) about --corpus.",
                    show_default=False)],
    reader: Annotated[bool, typer.Option("--reader", help="Fine-tune the extractive reader "
                      "(span_reader) on DATA's questions instead of training a GGUF adapter.")] =
        False,
    corpus: Annotated[Path | None, typer.Option("--corpus", help="With --reader: the documents "
                      "DATA asks about, indexed into --work [default: the configured store]",
                      show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="The file to write [default: "
                   ".ragcli/tune/adapter.gguf; with --reader .ragcli/tune/reader.safetensors]",
                   show_default=False)] = None,
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
    learning_rate: Annotated[float | None, typer.Option(
        "--learning-rate", min=0.0, help="[default: 5e-4; with --reader 3e-5]",
        show_default=False)] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="[default: 1; with "
                      "--reader 3]", show_default=False)] = None,
    accumulate: Annotated[int, typer.Option("--accumulate", min=1, help="Examples per "
                          "optimizer step.")] = 8,
    model: Annotated[Path | None, typer.Option("--model", help="GGUF model to adapt [default: "
                     "the shipped SmolLM2-135M-Instruct]", show_default=False)] = None,
    config: ConfigOpt = None,
) -> None:
    """Train a LoRA adapter that teaches the model to answer from its passages, or (--reader)
    fine-tune the extractive reader on your golden questions (exit 0 better than before on every
    --eval set, 18 not better). Needs pip install 'ragcli[tune]'."""
    from ..errors import UsageError

    if reader:
        _tune_reader(data, corpus, out or Path(".ragcli/tune/reader.safetensors"), work,
                     exclude or [], eval_set or [], eval_limit, seed,
                     3e-5 if learning_rate is None else learning_rate, epochs or 3, config)
        return
    if corpus is not None:
        raise UsageError("--corpus is for --reader (a BEIR directory holds its own corpus)")
    out = out or Path(".ragcli/tune/adapter.gguf")
    learning_rate = 5e-4 if learning_rate is None else learning_rate
    epochs = epochs or 1
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
    _verdict(rows, better, "the adapter", "the base model", "base model vs adapter")


def _tune_reader(data: Path, corpus: Path | None, out: Path, work: Path, exclude: list[Path],
                 eval_set: list[str], eval_limit: int, seed: int, learning_rate: float,
                 epochs: int, config: Path | None) -> None:
    """ragcli tune --reader: windows from DATA's golden questions as ask reads them, the reader
    fine-tuned on them, written beside the shipped one's format, then compared on --eval."""
    import importlib.util
    import os

    from ..errors import UsageError
    from ..evaluate.calibration import corpus_store
    from ..evaluate.goldens import load_goldens
    from ..evaluate.tuning import compare_readers, excluded_questions, reader_examples
    from ..paths import file_sha256
    from ..runtimes.embedder import get_embedder
    from ..runtimes.finetuned import base_model_dir, load_tokenizer
    from ..runtimes.reader import READER_WEIGHTS, OnnxReader
    from ..runtimes.training import tune_reader
    from ..settings import READER_FILE_SUFFIX
    from ..store.store import Store
    from .evaluate import _calibration_pair

    if not data.is_file():
        raise UsageError(f"{data}: --reader trains on a golden set (a JSONL file of questions "
                         "with expected_answers)")
    if out.is_dir() or out.suffix != READER_FILE_SUFFIX:
        raise UsageError(f"--out {out}: a reader file ends in {READER_FILE_SUFFIX}")
    if out.resolve() == READER_WEIGHTS.resolve():
        raise UsageError(f"--out {out} is the shipped reader (records name it by hash): write "
                         "your reader elsewhere")
    evals = [_calibration_pair(spec, "--eval") for spec in eval_set]
    for package in ("torch", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise UsageError(f"ragcli tune --reader needs {package}: run scripts/demo, or pip "
                             "install 'ragcli[tune]'")
    settings = settings_from(config)
    skip = excluded_questions([*exclude, *(g for g, _ in evals)])
    cases = [c for c in load_goldens(data)
             if c.id not in skip and " ".join(c.question.lower().split()) not in skip]
    embedder = get_embedder(settings.embedder)
    if corpus is not None:
        store = corpus_store(corpus, work / "reader-store", embedder, progress_bar(False))
        settings = replace(settings, store=store.path)
    else:
        store = Store.open(settings.store)
        store.require_embedder(embedder.id)
    start_from = Path(settings.span_reader) if settings.span_reader.endswith(READER_FILE_SUFFIX) \
        else READER_WEIGHTS
    items, counts = reader_examples(cases, store, settings, embedder,
                                    load_tokenizer(base_model_dir()))
    render.info(f"{data}: {len(cases)} questions after exclusions; "
                + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if not any(start for _, start, _ in items):
        raise UsageError(f"{data}: no question's expected answer is in the passages retrieval "
                         "gives it: nothing to train on")
    tune_reader(items, out, epochs=epochs, lr=learning_rate, batch=16, seed=seed,
                threads=len(os.sched_getaffinity(0)), start_from=start_from, report=render.info,
                summary={"goldens": str(data), "goldens_sha256": file_sha256(data)[:16],
                         "counts": counts, "store_generation": store.manifest.generation,
                         "command": shlex.join(["ragcli", *sys.argv[1:]])})
    built = OnnxReader(weights=out)
    built.build()
    render.info(f"reader written to {out} ({built.id}); use it with span_reader = \"{out}\" "
                "(mode auto)")
    if not evals:
        return
    rows, better = compare_readers(evals, settings, embedder, out, work, eval_limit,
                                   generator_for=gguf_generator,
                                   index_progress=progress_bar(False))
    _verdict(rows, better, "the tuned reader", "the current one", "current reader vs tuned")


def _verdict(rows: list[dict[str, Any]], better: bool, tuned: str, base: str, title: str) -> None:
    """The --eval table, then exit 0 when ``tuned`` beat ``base`` on every set, 18 when not."""
    render.tune_table(rows, title)
    if better:
        render.info(f"{tuned} is better than {base} on every --eval set")
        return
    render.error(f"{tuned} is not better than {base} on every --eval set "
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
