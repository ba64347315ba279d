"""Calibration: the refusal threshold (``min_confidence``) over one or more golden sets, and the
escalation band of route small-first for a budget (``escalate_below``, or ``min_reader_score``
when the extractive reader is the small route)."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..answer.answering import Answerer, screen_retrieval
from ..runtimes.embedder import Embedder
from ..runtimes.generator import Generator
from ..search.retrieval import retrieve_configured
from ..settings import Settings
from ..store.store import Store
from .evaluation import CaseResult, compute_metrics, evaluate, route_report
from .goldens import Golden


def calibrate(goldens: Sequence[Golden], store: Store, answerer: Answerer) -> list[dict[str, float]]:
    """Sweep the refusal threshold over retrieval confidence (no generation): for each value,
    how many answerable cases would be refused and how many must-refuse cases let through.
    The confidence is the one ``ask`` gates on: after screening (see answering.py)."""
    confidences = []
    for g in goldens:
        found = retrieve_configured(store, answerer.embedder, g.question, list(g.groups),
                                    answerer.settings)
        confidences.append((screen_retrieval(g.question, found)[2], g.must_refuse))
    rows = []
    for step in range(30, 81):
        threshold = step / 100
        wrong_refusals = sum(1 for c, must in confidences if not must and c < threshold)
        wrong_answers = sum(1 for c, must in confidences if must and c >= threshold)
        rows.append({"threshold": threshold, "wrong_refusals": float(wrong_refusals),
                     "wrong_answers": float(wrong_answers),
                     "errors": float(wrong_refusals + wrong_answers)})
    return rows


def calibrate_sets(sets: Sequence[tuple[str, Sequence[Golden], Store]], answerer: Answerer,
                   current: float) -> dict[str, Any]:
    """``calibrate`` on each (name, golden set, its store), and one threshold for all of them:
    the one with the lowest mean of the sets' error rates (wrong refusals plus wrong answers, of
    that set's cases), so a set with many cases does not outvote the others; ties go to the
    value closest to ``current``. Returns {"current", "best", "sets": {name: best row there},
    "sweep": [{"threshold", "error_rate", name: row, ...}]}."""
    swept = {name: calibrate(goldens, store, answerer) for name, goldens, store in sets}
    sizes = {name: len(goldens) for name, goldens, _ in sets}
    rows = []
    for i, first in enumerate(next(iter(swept.values()))):
        row: dict[str, Any] = {"threshold": first["threshold"]}
        for name, sweep in swept.items():
            row[name] = dict(sweep[i], error_rate=sweep[i]["errors"] / sizes[name])
        row["error_rate"] = statistics.fmean(row[name]["error_rate"] for name in swept)
        rows.append(row)
    best = min(rows, key=lambda r: (round(r["error_rate"], 9), abs(r["threshold"] - current)))
    return {"current": current, "best": best, "sets": list(swept), "sweep": rows}


def calibrate_route(small: Sequence[CaseResult], large: Sequence[CaseResult], *,
                    budget_usd: float | None = None, max_escalated: float | None = None,
                    knob: str = "escalate_below") -> dict[str, Any]:
    """``eval --calibrate --route small-first``: choose the escalation band for a budget.

    ``small`` and ``large`` are the same cases answered by the small route alone and by the large
    model alone. ``knob`` is what the band is on: ``escalate_below`` (the retrieval confidence)
    or, when the extractive reader is the small route, ``min_reader_score`` (its best span's
    score: below it the reader does not answer, and small-first asks the large model). For each
    candidate edge (the lowest, then every case's value +1e-6), a case is escalated when the small
    result failed its checks (``failed_checks``) or its value is below the edge; it then shows
    the large result, unless that is a refusal and the small one a checked answer (``Answerer``
    does the same). Each row: the pass rate, token F1, right and wrong answers, the escalated
    share and the cost per query (small's, plus large's when escalated). The chosen edge: the
    best pass rate within the budget (mean USD per query and/or escalated share); ties go to the
    cheaper."""
    def value(r: CaseResult) -> float:
        got = r.confidence if knob == "escalate_below" else r.reader_score
        return float("-inf") if got is None else float(got)

    floor = 0.0 if knob == "escalate_below" else \
        min((value(r) for r in small if r.reader_score is not None), default=0.0)
    edges = sorted({floor, *(round(value(r) + 1e-6, 6) for r in small if value(r) >= floor)})
    rows = []
    for edge in edges:
        shown, escalated, usd = [], 0, 0.0
        for s, g in zip(small, large, strict=True):
            usd += float(s.cost.get("usd") or 0.0)
            if s.error or s.refused and not s.failed_checks or \
                    not (s.failed_checks or (not s.refused and value(s) < edge)):
                shown.append(s)
                continue
            escalated += 1
            usd += float(g.cost.get("usd") or 0.0)
            shown.append(s if g.refused and not s.refused or g.error else g)
        metrics = compute_metrics(shown)
        rows.append({knob: edge, "pass_rate": metrics["pass_rate"],
                     "token_f1": metrics.get("token_f1", 0.0),
                     "answered_right": metrics.get("answered_right", 0.0),
                     "wrong_answers": metrics.get("wrong_answers", 0.0),
                     "escalated_share": escalated / max(1, len(small)),
                     "usd_per_query": usd / max(1, len(small))})
    within = [r for r in rows
              if (budget_usd is None or r["usd_per_query"] <= budget_usd + 1e-12)
              and (max_escalated is None or r["escalated_share"] <= max_escalated + 1e-12)]
    best = max(within, key=lambda r: (round(r["pass_rate"], 9), -r["usd_per_query"],
                                      -r["escalated_share"])) if within else None
    return {"knob": knob, "budget_usd_per_query": budget_usd,
            "max_escalated_share": max_escalated, "best": best, "sweep": rows,
            "small_alone": route_report(small).get("all", {}),
            "large_alone": route_report(large).get("all", {})}


NO_READER_BAR = -1e9
"""``min_reader_score`` for the small route's calibration run: every case gets the reader's span."""


def calibrate_routes(goldens: Sequence[Golden], settings: Settings, embedder: Embedder,
                     generator_factory: Callable[[], Generator], *,
                     budget_usd: float | None = None,
                     max_escalated: float | None = None) -> dict[str, Any]:
    """``eval --calibrate --route small-first``: every case answered by the small route alone
    (the extractive reader with no bar, when it is the small route) and by the large model
    alone, then :func:`calibrate_route`; ``current`` is today's setting."""
    reader = settings.mode == "auto" and settings.span_reader != "gguf"
    knob = "min_reader_score" if reader else "escalate_below"
    alone = replace(settings, route="local",
                    min_reader_score=NO_READER_BAR if reader else settings.min_reader_score)
    small = evaluate(goldens, Answerer(alone, embedder, generator_factory)).cases
    large = evaluate(goldens, Answerer(replace(settings, route="large"), embedder,
                                       generator_factory)).cases
    report = calibrate_route(small, large, budget_usd=budget_usd, max_escalated=max_escalated,
                             knob=knob)
    report["current"] = getattr(settings, knob)
    return report


def corpus_store(corpus: Path, path: Path, embedder: Embedder,
                 progress: Callable[[int, int], None] | None = None) -> Store:
    """The store of a calibration or evaluation corpus, made or brought up to date (a second run
    only checks the files)."""
    from ..ingest.indexing import reindex

    path = Path(os.path.normpath(path))
    reindex([corpus], path, embedder, progress=progress)
    return Store.open(path)


def run_calibration(goldens: Path, answerer: Answerer, *,
                    extra_sets: Sequence[tuple[Path, Path]] = (),
                    budget_usd: float | None = None, max_escalated: float | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """``eval --calibrate``: with route small-first, the escalation band for a budget
    (:func:`calibrate_routes`); otherwise the refusal threshold over ``goldens`` (on the
    configured store) and each (golden set, corpus) of ``extra_sets`` (each corpus indexed into
    a store of its own beside the configured one), one threshold for all
    (:func:`calibrate_sets`), and with the extractive reader its ``min_reader_score`` over the
    same sets (:func:`calibrate_reader`, under ``reader``). The report says which (``kind``)."""
    from ..errors import UsageError
    from .goldens import load_goldens, set_name

    settings = answerer.settings
    cases = load_goldens(goldens)
    if settings.route == "small-first":
        if extra_sets:
            raise UsageError("--calibrate-set calibrates min_confidence, not --route small-first")
        report = calibrate_routes(cases, settings, answerer.embedder, answerer.generator_factory,
                                  budget_usd=budget_usd, max_escalated=max_escalated)
        return {"kind": "escalation", **report}
    if budget_usd is not None or max_escalated is not None:
        raise UsageError("--budget and --max-escalated go with --calibrate --route small-first")
    sets = [(set_name(goldens), cases, Store.open(settings.store))]
    if extra_sets and not isinstance(settings.store, Path):
        raise UsageError("--calibrate-set indexes each corpus beside the store: it needs a store "
                         f"directory, not {settings.store}")
    for path, corpus in extra_sets:
        name = set_name(path)
        if name in {n for n, _, _ in sets}:
            raise UsageError(f"--calibrate-set {path}: two golden sets named {name!r}")
        store = corpus_store(corpus, Path(settings.store) / ".." / "calibrate" / name,
                             answerer.embedder, progress)
        sets.append((name, load_goldens(path), store))
    report = {"kind": "min_confidence", **calibrate_sets(sets, answerer, settings.min_confidence)}
    if answerer.uses_reader:  # the reader's bar, over the same sets (docs/answers.md)
        report["reader"] = calibrate_reader(sets, answerer)
    return report


def reader_sweep(results: Sequence[CaseResult]) -> list[dict[str, float]]:
    """What each ``min_reader_score`` would do to cases answered with none (every case the reader
    read, with its best span's score): for each threshold (every score seen), the share of
    answerable cases answered, the wrong answers among those answered (the short answer holds no
    expected answer), the right ones, and the must-refuse cases answered."""
    read = [r for r in results if r.reader_score is not None and not r.error]
    answerable = sum(1 for r in results if r.answerable)
    rows = []
    for threshold in sorted({r.reader_score for r in read if r.reader_score is not None}):
        kept = [r for r in read if r.reader_score is not None and r.reader_score >= threshold]
        right = sum(1 for r in kept if r.answerable and r.short_correct)
        wrong = sum(1 for r in kept if r.answerable and r.short_correct is False)
        absent = sum(1 for r in kept if r.golden.must_refuse)
        given = right + wrong
        rows.append({"threshold": threshold, "answered": given / answerable if answerable else 0.0,
                     "right": float(right), "wrong": float(wrong), "absent_answered": float(absent),
                     "wrong_rate": wrong / given if given else 0.0})
    return rows


def risk_coverage(results: Sequence[CaseResult],
                  shares: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)) -> list[dict[str, float]]:
    """The wrong-answer rate at each share of answerable cases answered (the highest-scoring
    ones first): the rows of :func:`reader_sweep` whose answered share is the first at or above
    each of ``shares`` (those the reader reaches)."""
    rows = sorted(reader_sweep(results), key=lambda r: (r["answered"], -r["threshold"]))
    out = []
    for share in shares:
        row = next((r for r in rows if r["answered"] >= share - 1e-9), None)
        if row is not None:
            out.append({"share": share, **row})
    return out


def calibrate_reader(sets: Sequence[tuple[str, Sequence[Golden], Store]],
                     answerer: Answerer) -> dict[str, Any]:
    """``min_reader_score`` over the golden sets: each set answered once with no reader bar, then
    the threshold with the lowest mean over the sets of (wrong answers + must-refuse cases
    answered + right answers lost) per case, i.e. refuse where the reader is more often wrong
    than right. Returns {"current", "best", "sweep": rows of the chosen threshold per set,
    "risk_coverage": {set: rows}}."""
    open_settings = replace(answerer.settings, min_reader_score=-1e9)
    per_set = {}
    for name, goldens, store in sets:
        probe = answerer.with_settings(replace(open_settings, store=store.path))
        per_set[name] = evaluate(goldens, probe).cases
    scores = sorted({r.reader_score for cases in per_set.values() for r in cases
                     if r.reader_score is not None})
    current = answerer.settings.min_reader_score
    rows = []
    for threshold in [min(scores, default=0.0) - 1.0, *scores]:
        row: dict[str, Any] = {"threshold": threshold}
        for name, cases in per_set.items():
            kept = [r for r in cases if r.reader_score is not None and r.reader_score >= threshold]
            lost = [r for r in cases if r.reader_score is not None and r.reader_score < threshold]
            errors = (sum(1 for r in kept if r.short_correct is False or r.golden.must_refuse)
                      + sum(1 for r in lost if r.short_correct))
            row[name] = errors / max(1, len(cases))
        row["error_rate"] = statistics.fmean(row[name] for name in per_set)
        rows.append(row)
    best = min(rows, key=lambda r: (round(r["error_rate"], 9), abs(r["threshold"] - current)))
    return {"current": current, "best": best,
            "risk_coverage": {name: risk_coverage(cases) for name, cases in per_set.items()},
            "at_best": {name: next((r for r in reader_sweep(cases) if r["threshold"] >= best["threshold"]),
                                   None) for name, cases in per_set.items()}}
