"""Snapshots of the human-readable output (ragcli/cli/render.py), rendered through an injected
console (``render.captured``) from fixed data: what a user reads in a terminal or a log, checked
line for line. A deliberate change of the output: ``RAGCLI_UPDATE_SNAPSHOTS=1 pytest
tests/test_render.py`` rewrites tests/snapshots/, and the diff is reviewed like code."""

from __future__ import annotations

import os
from pathlib import Path

from ragcli.answer.replay import ReplayReport
from ragcli.answer.result import Answer
from ragcli.cli import render
from ragcli.evaluate.gate import Verdict
from ragcli.models import Citation, Hit, Quote, Verification

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("RAGCLI_UPDATE_SNAPSHOTS") == "1"  # read now: each test clears RAGCLI_*

HIT = Hit(chunk_id="handbook:hr/parental-leave.md#1", doc_id="hr/parental-leave.md",
          source="/corpora/handbook/hr/parental-leave.md", title="Parental leave policy",
          heading_path="Parental leave policy > Paid leave",
          text="Non-birthing parents receive 16 weeks of fully paid leave.", chunk_hash="h1",
          acl=("public",), score=0.0909, vector_score=0.71, fts_score=7.2, evidence=0.9013)
OTHER = Hit(chunk_id="handbook:hr/benefits.md#0", doc_id="hr/benefits.md",
            source="/corpora/handbook/hr/benefits.md", title="Benefits", heading_path="",
            text="Benefits overview.", chunk_hash="h2", acl=("public",), score=0.05,
            vector_score=None, fts_score=3.1, evidence=0.41)


def check(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no snapshot {path}: run with RAGCLI_UPDATE_SNAPSHOTS=1 to write it"
    assert text == path.read_text(encoding="utf-8"), \
        f"{name}: the output changed; if on purpose, RAGCLI_UPDATE_SNAPSHOTS=1 rewrites {path}"


def rendered(draw: object, *args: object) -> str:
    with render.captured() as out:
        draw(*args)  # type: ignore[operator]
    return out.getvalue()


def test_answer_with_quote_sources_and_route() -> None:
    answer = Answer(
        request_id="01a20000-0000-7000-8000-000000000001", question="How long is leave?",
        answer="Non-birthing parents receive 16 weeks of fully paid leave. [1]", refused=False,
        mode="auto", citations=(Citation(1, HIT.chunk_id, HIT.doc_id, HIT.source, HIT.title),),
        retrieved=(HIT, OTHER), confidence=0.9013, short_answer="16 weeks",
        quote=Quote(1, HIT.chunk_id, HIT.text, 0, 58),
        verification=Verification("verified", "model-span"),
        route={"policy": "small-first", "taken": "large", "escalated": True,
               "reason": "small_unsupported_answer"})
    check("answer", rendered(render.answer, answer))


def test_refusal_lists_the_sources_searched() -> None:
    answer = Answer(request_id="01a20000-0000-7000-8000-000000000002", question="Zebras?",
                    answer="I don't know.", refused=True, mode="auto", retrieved=(HIT, OTHER),
                    refusal_reason="low_confidence: best evidence 0.410 is below min_confidence "
                    "0.500", confidence=0.41)
    check("refusal", rendered(render.answer, answer))


def test_traces_stats_table() -> None:
    rows = [{"day": "2026-11-22", "requests": 40, "answered": 31, "refused": 7, "failed": 2,
             "interrupted": 0, "escalated": 5, "answered_by_large": 4, "prompt_tokens": 12000,
             "completion_tokens": 900, "cpu_s": 31.5, "usd": 0.0123, "latency_p50_ms": 610.0,
             "latency_p95_ms": 1830.5, "latency_max_ms": 2500.0}]
    check("traces-stats", rendered(render.trace_stats, rows, "2026-11-16"))
    check("traces-stats-empty", rendered(render.trace_stats, [], "2026-11-16"))


def test_eval_routes_table() -> None:
    row = {"cases": 74.0, "share": 1.0, "escalated_share": 0.1, "pass_rate": 0.959,
           "string_presence": 0.965, "token_f1": 0.697, "latency_p50_ms": 798.2,
           "latency_p95_ms": 2138.9, "cpu_s_p50": 0.761, "cpu_s_total": 53.6,
           "completion_tokens": 120.0, "usd_per_query": 0.000021}
    report = {"all": row, "small": {**row, "cases": 66.0, "share": 0.89},
              "large": {**row, "cases": 8.0, "share": 0.11, "escalated_share": 1.0}}
    check("eval-routes", rendered(render.routes, report))


def test_replay_reports() -> None:
    drifted = ReplayReport(
        request_id="01a20000-0000-7000-8000-000000000003", against="latest", identical=False,
        recorded_version=4, replayed_version=6,
        checks={"retrieval": False, "prompt": False, "output": True, "answer": True},
        retrieval={"recorded": ["a#0", "b#1"], "replayed": ["a#0", "c#2"], "appeared": ["c#2"],
                   "disappeared": ["b#1"], "changed": [], "deleted": ["b#1"], "now_denied": []},
        diffs={"prompt": "--- recorded/prompt\n+++ replayed/prompt\n-old\n+new"})
    check("replay-drifted", rendered(render.replay, drifted))
    served = ReplayReport(
        request_id="01a20000-0000-7000-8000-000000000004", against="recorded", identical=False,
        recorded_version=4, replayed_version=4,
        checks={"retrieval": True, "prompt": True, "output": True, "answer": True,
                "model_verified": False}, served="http://127.0.0.1:8080/v1")
    assert served.outcome == "unverifiable"
    check("replay-unverifiable", rendered(render.replay, served))


def test_status() -> None:
    data = {"store": "/data/store", "documents": 49, "chunks": 98, "version": 4,
            "embedder": "all-MiniLM-L6-v2/onnx-fp32", "corpora": {"handbook": "/corpora/handbook"},
            "vector_index": {"type": "none (flat scan)", "built_at_rows": 50000},
            "staleness": {"stale": 1, "examples": ["hr/benefits.md"], "acl_pending": [
                {"doc_id": "hr/salary-bands.md", "stored": ["hr"], "now": ["hr", "finance"],
                 "rule": "acl.toml: hr/salary-*"}]}}
    check("status", rendered(render.status, data))


def test_eval_report() -> None:
    from ragcli.errors import ExitCode
    from ragcli.evaluate.evaluation import CaseResult, EvalResult, compute_metrics
    from ragcli.evaluate.goldens import Golden

    right = CaseResult(Golden("leave", "How long?", expected_docs=("hr/parental-leave.md",),
                              expected_answers=("16 weeks",)),
                       answer="16 weeks [1]", short_answer="16 weeks",
                       retrieved_docs=["hr/parental-leave.md"], cited_docs=["hr/parental-leave.md"],
                       confidence=0.9, timings_ms={"total": 500.0},
                       cost={"cpu_s": 0.5, "usd": 0.0, "tokens": {"prompt": 200, "completion": 0}})
    wrong = CaseResult(Golden("absent", "Zebras?", must_refuse=True), answer="Zebras are 3 [1]",
                       confidence=0.6, timings_ms={"total": 700.0},
                       cost={"cpu_s": 0.7, "usd": 0.0, "tokens": {"prompt": 250, "completion": 0}})
    cases = [right, wrong]
    verdict = Verdict(ExitCode.EVAL_REGRESSION, ("case absent passed in the baseline, fails now: "
                                                 "answered but must refuse",))
    metrics = {k: v for k, v in compute_metrics(cases).items()
               if k in ("hit@3", "pass_rate", "refusal_recall", "latency_total_p50_ms")}
    check("eval-report", rendered(render.evaluation, EvalResult(cases, metrics), verdict))
