"""eval: golden sets and the CI gate; BEIR retrieval metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ExitCode
from . import render
from .common import (
    AdapterOpt,
    ConfigOpt,
    JsonOpt,
    NoAdapterOpt,
    StoreOpt,
    adapter_flag,
    gguf_generator,
    progress_bar,
    settings_from,
)


def eval_command(
    goldens: Annotated[Path | None, typer.Argument(help="Golden set (JSONL).",
                                                   show_default=False)] = None,
    baseline: Annotated[Path | None, typer.Option("--baseline", help="Baseline metrics to gate "
                        "against (JSON).", show_default=False)] = None,
    update_baseline: Annotated[bool, typer.Option("--update-baseline",
                               help="Write the measured metrics to --baseline.")] = False,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here.",
                     show_default=False)] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Write a Markdown summary "
                        "here (for a PR comment).", show_default=False)] = None,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Run each case N times and "
                      "report flaky ones.")] = 1,
    calibrate: Annotated[bool, typer.Option("--calibrate", help="Sweep the refusal threshold "
                         "and report the trade-off.")] = False,
    calibrate_set: Annotated[list[str] | None, typer.Option(
        "--calibrate-set", metavar="GOLDENS=CORPUS", show_default=False,
        help="With --calibrate: another golden set and the corpus it asks about (indexed into a "
        "store of its own); every set is reported separately and weighs the same.")] = None,
    beir: Annotated[Path | None, typer.Option("--beir", help="A BEIR directory: retrieval "
                    "metrics only.", show_default=False)] = None,
    split: Annotated[str, typer.Option("--split", help="BEIR qrels split.")] = "test",
    store: StoreOpt = None,
    mode: Annotated[str | None, typer.Option("--mode", help="auto, generative or extractive.",
                    show_default=False)] = None,
    adapter: AdapterOpt = None,
    no_adapter: NoAdapterOpt = False,
    top_k: Annotated[int | None, typer.Option("--top-k", show_default=False,
                     help="Passages per question.")] = None,
    perturb: Annotated[str | None, typer.Option("--perturb", show_default=False,
                       help="Re-run every case under perturbations that must not change a "
                       "verdict ('all', or a comma list: threads,query-noise) and mark the cases "
                       "that flip as unstable.")] = None,
    accept_regression: Annotated[list[str] | None, typer.Option(
        "--accept-regression", metavar="ID", show_default=False,
        help="With --update-baseline: let this passing case be dropped (repeat per case).")] = None,
    route: Annotated[str | None, typer.Option("--route", show_default=False, help="local, "
                     "small-first or large (docs/routing.md); the report has a row per model "
                     "with its share, quality, latency and cost.")] = None,
    budget: Annotated[float | None, typer.Option("--budget", min=0.0, show_default=False,
                      metavar="USD", help="With --calibrate --route small-first: the mean cost "
                      "per query allowed (usd_per_* settings).")] = None,
    max_escalated: Annotated[float | None, typer.Option("--max-escalated", min=0.0, max=1.0,
                             show_default=False, help="With --calibrate --route small-first: "
                             "the share of questions the large model may get.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate golden questions and gate on a baseline (exit 0 pass, 14 regression, 15 leak,
    16 a case errored)."""
    from ..errors import UsageError

    if beir is not None:
        from ..evaluate.beir import evaluate_beir

        beir_settings = settings_from(config, store=store)
        out = evaluate_beir(beir, split, beir_settings, beir_settings.store if store else None,
                            progress=progress_bar(as_json))
        render.print_json(out) if as_json else render.status(out)
        return
    if goldens is None:
        raise UsageError("give a golden set (goldens/handbook.jsonl) or --beir DIR")
    if calibrate_set and not calibrate:
        raise UsageError("--calibrate-set goes with --calibrate")
    if (budget is not None or max_escalated is not None) and not calibrate:
        raise UsageError("--budget and --max-escalated go with --calibrate --route small-first")
    from ..answer.answering import Answerer
    from ..evaluate.gate import run_gate
    from ..evaluate.perturbations import parse_perturbations
    from ..runtimes.embedder import get_embedder

    names = parse_perturbations(perturb)
    settings = settings_from(config, store=store, mode=mode, top_k=top_k, route=route,
                             adapter=adapter_flag(adapter, no_adapter))
    answerer = Answerer(settings, get_embedder(settings.embedder),
                        lambda: gguf_generator(settings))
    if calibrate:
        from ..evaluate.calibration import run_calibration

        report = run_calibration(goldens, answerer, budget_usd=budget, max_escalated=max_escalated,
                                 extra_sets=[_calibration_pair(s) for s in calibrate_set or ()],
                                 progress=progress_bar(as_json))
        if as_json:
            render.print_json(report)
        else:
            (render.route_calibration if report["kind"] == "escalation"
             else render.calibration)(report)
        return
    run = run_gate(goldens, answerer, baseline=baseline, update=update_baseline,
                   accept=accept_regression or (), junit=junit, markdown=markdown,
                   perturbations=names, repeat=repeat)
    for case_id in run.dropped:
        render.warning(f"baseline: dropped passing case {case_id} (--accept-regression)")
    render.print_json(run.to_json()) if as_json else render.evaluation(run.result, run.verdict)
    if run.verdict.code != ExitCode.OK:
        raise typer.Exit(int(run.verdict.code))


def _calibration_pair(spec: str, flag: str = "--calibrate-set") -> tuple[Path, Path]:
    from ..errors import UsageError

    goldens, sep, corpus = spec.partition("=")
    if not sep or not goldens or not corpus:
        raise UsageError(f"{flag} {spec!r}: write GOLDENS=CORPUS (a golden set and the "
                         "directory or JSONL file it asks about)")
    for path in (Path(goldens), Path(corpus)):
        if not path.exists():
            raise UsageError(f"{flag}: {path} does not exist")
    return Path(goldens), Path(corpus)
