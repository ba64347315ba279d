"""eval: golden sets and the CI gate; BEIR retrieval metrics."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import ExitCode
from . import render

if TYPE_CHECKING:
    from ..embedder import Embedder
    from ..store import Store
from .common import (
    AdapterOpt,
    ConfigOpt,
    JsonOpt,
    NoAdapterOpt,
    StoreOpt,
    adapter_flag,
    check_output_path,
    gguf_generator,
    progress_bar,
    settings_from,
    write_output,
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
        _eval_beir(beir, split, store, config, as_json)
        return
    if goldens is None:
        raise UsageError("give a golden set (goldens/handbook.jsonl) or --beir DIR")
    if update_baseline and baseline is None:
        raise UsageError("--update-baseline needs --baseline FILE to write")
    if accept_regression and not update_baseline:
        raise UsageError("--accept-regression goes with --update-baseline")
    if calibrate_set and not calibrate:
        raise UsageError("--calibrate-set goes with --calibrate")
    if (budget is not None or max_escalated is not None) and not (calibrate and
                                                                  route == "small-first"):
        raise UsageError("--budget and --max-escalated go with --calibrate --route small-first")
    extra_sets = [_calibration_pair(spec) for spec in calibrate_set or ()]
    from ..answering import Answerer
    from ..embedder import get_embedder
    from ..evaluation import calibrate_sets, evaluate, load_goldens, parse_perturbations
    from ..gate import (
        check_update,
        decide,
        junit_xml,
        make_baseline,
        markdown_summary,
        read_baseline,
    )
    from ..store import Store

    names = parse_perturbations(perturb)
    settings = settings_from(config, store=store, mode=mode, top_k=top_k, route=route,
                             adapter=adapter_flag(adapter, no_adapter))
    cases = load_goldens(goldens)
    # every input read and every output checked before a run that can take minutes
    known = read_baseline(baseline) if baseline is not None and (
        not update_baseline or baseline.exists()) else None
    for path, flag in ((baseline if update_baseline else None, "--baseline"), (junit, "--junit"),
                       (markdown, "--markdown")):
        check_output_path(path, flag)
    answerer = Answerer(settings, get_embedder(settings.embedder),
                        lambda: gguf_generator(settings))
    if calibrate and settings.route == "small-first":
        from ..evaluation import calibrate_route

        if calibrate_set:
            raise UsageError("--calibrate-set calibrates min_confidence, not --route small-first")
        small = evaluate(cases, Answerer(replace(settings, route="local"), answerer.embedder,
                                         answerer.generator_factory)).cases
        large = evaluate(cases, Answerer(replace(settings, route="large"), answerer.embedder,
                                         answerer.generator_factory)).cases
        report = calibrate_route(small, large, budget_usd=budget, max_escalated=max_escalated)
        report["current"] = settings.escalate_below
        if as_json:
            render.print_json(report)
        else:
            render.route_calibration(report)
        return
    if calibrate:
        sets = [(_set_name(goldens), cases, Store.open(settings.store))]
        for path, corpus in extra_sets:
            name = _set_name(path)
            if name in {n for n, _, _ in sets}:
                raise UsageError(f"--calibrate-set {path}: two golden sets named {name!r}")
            sets.append((name, load_goldens(path),
                         _corpus_store(corpus, settings.store / ".." / "calibrate" / name,
                                       answerer.embedder, as_json)))
        report = calibrate_sets(sets, answerer, settings.min_confidence)
        if as_json:
            render.print_json(report)
        else:
            render.calibration(report)
        return
    start = time.perf_counter()
    result = evaluate(cases, answerer, perturbations=names, repeat=repeat)
    seconds = time.perf_counter() - start
    verdict = decide(result, None if update_baseline else known)
    if baseline is not None and update_baseline:
        new = make_baseline(result)
        dropped = check_update(known, new, set(accept_regression or ()))
        write_output(baseline, json.dumps(new, indent=2) + "\n", "--baseline")
        for case_id in dropped:
            render.warning(f"baseline: dropped passing case {case_id} (--accept-regression)")
    if junit:
        write_output(junit, junit_xml(result, verdict, goldens.stem, seconds), "--junit")
    if markdown:
        write_output(markdown, markdown_summary(result, verdict), "--markdown")
    if as_json:
        render.print_json({"verdict": verdict.word, "regressions": list(verdict.regressions),
                           "unstable": verdict.unstable, "seconds": round(seconds, 2),
                           **result.to_json()})
    else:
        render.evaluation(result, verdict)
    if verdict.code != ExitCode.OK:
        raise typer.Exit(int(verdict.code))


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


def _set_name(goldens: Path) -> str:
    """A golden set's name: its file's stem, or its directory's name for a goldens.jsonl."""
    return goldens.resolve().parent.name if goldens.stem == "goldens" else goldens.stem


def _corpus_store(corpus: Path, path: Path, embedder: Embedder, quiet: bool) -> Store:
    """The store of a calibration corpus (made or updated: a second run only checks the files)."""
    from ..indexing import reindex as run_reindex
    from ..store import Store

    path = Path(os.path.normpath(path))
    run_reindex([corpus], path, embedder, progress=progress_bar(quiet))
    return Store.open(path)


def _eval_beir(directory: Path, split: str, store: str | None, config: Path | None,
               as_json: bool) -> None:
    from ..beir import load_split, score_rankings
    from ..embedder import get_embedder
    from ..indexing import reindex as run_reindex
    from ..retrieval import retrieve_configured
    from ..settings import default_store
    from ..store import Store

    settings = settings_from(config, store=store)
    data = load_split(directory, split)
    # a BEIR corpus gets a store of its own unless --store names one
    store_path = settings.store if store else default_store().parent / "beir" / directory.resolve().name
    embedder = get_embedder(settings.embedder)
    run_reindex([data.corpus], store_path, embedder, progress=progress_bar(as_json))
    opened = Store.open(store_path)
    deep = replace(settings, top_k=200, candidates=200)  # enough documents for recall@100
    rankings = {q: [h.doc_id for h in retrieve_configured(opened, embedder, text, [], deep).hits]
                for q, text in data.queries.items()}
    scores = score_rankings(rankings, data.qrels)
    out = {"beir": str(directory), "split": split, "queries": len(data.queries),
           "store": str(store_path), "retrieval": settings.retrieval,
           **{k: round(v, 4) for k, v in scores.items()}}
    if as_json:
        render.print_json(out)
    else:
        render.status(out)
