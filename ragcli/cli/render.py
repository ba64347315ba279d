"""All terminal output. Data goes to stdout, diagnostics to stderr; colour only on a TTY."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..models import section_label

if TYPE_CHECKING:
    from ..audit.trace import Trace


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


_INJECTED: ContextVar[Console | None] = ContextVar("ragcli_render_console", default=None)
"""A console every data print goes to instead of stdout (``captured``: snapshot tests)."""


@contextmanager
def captured(width: int = 100) -> Iterator[io.StringIO]:
    """Render into a string instead of stdout: a plain console of ``width`` columns, no colour,
    so the text is what a user reading a pipe or a log sees."""
    buffer = io.StringIO()
    token = _INJECTED.set(Console(file=buffer, width=width, no_color=True, color_system=None,
                                  highlight=False, soft_wrap=True))
    try:
        yield buffer
    finally:
        _INJECTED.reset(token)


def stdout() -> Console:
    return _INJECTED.get() or Console(file=sys.stdout, no_color=_no_color(), highlight=False,
                                      soft_wrap=True)


def wide_stdout() -> Console:
    """stdout for the wide tables (traces stats, eval's per-route costs): a file or a pipe gets
    every column whole, a terminal its own width."""
    console = stdout()
    return console if console.is_terminal or _INJECTED.get() else \
        Console(file=sys.stdout, no_color=_no_color(), highlight=False, soft_wrap=True, width=200)


def stderr() -> Console:
    return Console(file=sys.stderr, no_color=_no_color(), highlight=False, soft_wrap=True)


def error(message: str) -> None:
    """One line on stderr: ``ragcli: error: <message>``."""
    stderr().print(Text(f"ragcli: error: {message}", style="bold red"))


def warning(message: str) -> None:
    stderr().print(Text(f"ragcli: warning: {message}", style="yellow"))


def info(message: str) -> None:
    """Progress of a long command, on stderr: ``ragcli: <message>``."""
    stderr().print(Text(f"ragcli: {message}"))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def print_json_line(data: Any) -> None:
    """One compact JSON object on its own line (chat --json, ask --batch)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def token_stream() -> Callable[[str], None] | None:
    """On a TTY, show the model's raw output as it is generated (dim, on stderr); the checked
    answer is printed when generation ends. Piped output gets only the final answer."""
    if not sys.stderr.isatty():
        return None
    console = stderr()

    def show(token: str) -> None:
        console.print(Text(token, style="dim"), end="")

    return show


def index_summary(report: Any, verb: str) -> None:
    """One line for cron logs; skipped files and links not followed as warnings on stderr."""
    for skipped in report.skipped:
        warning(f"skipped {skipped.source}: {skipped.reason}")
    for link in report.links:
        warning(f"not followed {link.source}: {link.reason}")
    version = "store has no chunks yet" if report.version is None \
        else f"store version {report.version}"
    total = report.added + report.changed + report.acl_changed + report.unchanged
    rebuilt = ", rebuilt from the sources (--rebuild, new embedder or store format)" if report.rebuilt else ""
    stdout().print(f"{verb} {total} documents ({report.added} added, {report.changed} changed, "
                   f"{report.acl_changed} acl changed, {report.deleted} deleted, "
                   f"{report.unchanged} unchanged), {report.chunks_written} chunks written "
                   f"({report.chunks_embedded} embedded), {len(report.skipped)} skipped, "
                   + (f"{len(report.links)} symbolic links not followed, " if report.links else "")
                   + f"{version}{rebuilt}, {report.seconds:.1f} s")


def answer(result: Any) -> None:
    out = stdout()
    if result.refused:
        out.print(Text(result.answer, style="bold yellow"))
        out.print(Text(f"Refused: {result.refusal_reason}", style="dim"))
        if result.retrieved:
            out.print("Closest sources searched:")
            for hit in result.retrieved:
                out.print(f"  - {hit.chunk_id}  {section_label(hit.title, hit.heading_path)} "
                          f"(evidence {hit.evidence:.2f})")
        else:
            out.print("No readable sources matched.")
    else:
        taken_large = (result.route or {}).get("taken") == "large"
        if (result.mode == "generative" or taken_large) and sys.stderr.isatty():
            stderr().print()  # end the streamed raw output
        if result.short_answer:
            out.print(Text(result.short_answer, style="bold"))
        if result.quote is not None:
            out.print(Text(f'  "{" ".join(result.quote.text.split())}" [{result.quote.n}]', style="dim"))
        check = result.verification
        if check is not None and check.outcome == "repaired":
            out.print(Text("  (the model's answer failed the claim checks and was replaced by this "
                           "extract: " + "; ".join(check.failed[:2]) + ")", style="yellow"))
        if result.answer != result.short_answer:
            out.print(result.answer)
        for sentence in result.unsupported_sentences:
            out.print(Text(f"  (left out, not supported by the sources: {sentence})", style="dim"))
        if result.citations:
            out.print("Sources:")
            hits = {h.chunk_id: h for h in result.retrieved}
            for citation in result.citations:
                hit = hits.get(citation.chunk_id)
                label = section_label(hit.title, hit.heading_path) if hit else citation.title
                out.print(f"  [{citation.n}] {citation.chunk_id}  {label}")
    route = result.route or {}
    if route.get("error"):
        out.print(Text(f"large model not used: {route['error']}; the small model's checked "
                       "result stands", style="yellow"))
    elif route.get("escalated"):
        out.print(Text(f"escalated to the large model ({route.get('reason')}); shown: the "
                       f"{route.get('taken')} model's result", style="dim"))
    elif route.get("policy") == "large":
        out.print(Text("answered through the large model (route large)", style="dim"))
    out.print(f"request id: {result.request_id}")


def trace_stats(rows: list[dict[str, Any]], since: str) -> None:
    out = wide_stdout()
    if not rows:
        out.print(f"no requests since {since}")
        return
    table = Table(box=None, padding=(0, 1), pad_edge=False)
    columns = (("day", "day"), ("requests", "asked"), ("answered", "answered"),
               ("refused", "refused"), ("failed", "failed"), ("escalated", "escalated"),
               ("tokens", "tokens"), ("cpu_s", "CPU s"), ("usd", "USD"),
               ("latency_p50_ms", "p50 ms"), ("latency_p95_ms", "p95 ms"))
    for _, title in columns:
        table.add_column(title, justify="left" if title == "day" else "right", no_wrap=True)
    for row in rows:
        row = dict(row, tokens=row["prompt_tokens"] + row["completion_tokens"])
        table.add_row(*(str(row[key]) for key, _ in columns))
    out.print(table)
    out.print("tokens: prompt + completion, every model; --json has each column and more",
              style="dim")


def chain_report(path: str, report: Any, key_env: str) -> None:
    """``traces verify``: what was checked, then the first problem (on stderr) if any."""
    out = stdout()
    sealing = (f"sealed with key {', '.join(report.keys)}" if report.keys else
               f"unkeyed SHA-256 (set {key_env} to seal with a key)")
    if report.keys and report.unkeyed:
        sealing += f"; {report.unkeyed} sealed before the key was set"
    head = report.head
    out.print(f"audit log {path}: {report.sealed} records checked, {sealing}")
    if report.pruned or report.checkpoints:
        out.print(f"{report.pruned} records pruned, explained by {report.checkpoints} "
                  "checkpoint(s)")
    if report.legacy:
        out.print(Text(f"{report.legacy} records written before the chain began (an older "
                       "ragcli): readable, not verifiable", style="yellow"))
    if report.unsealed:
        out.print(f"{report.unsealed} records never completed (started or interrupted): not sealed")
    if head is not None:
        out.print(f"head: seq {head.seq} {head.link}", style="dim")
    if report.problem is None:
        out.print("chain intact")
    else:
        error(f"audit log {path}: {report.problem.message}")


def prune_report(data: dict[str, Any]) -> None:
    verb = "would remove" if data["dry_run"] else "removed"
    line = (f"{verb} {data['removed']} sealed records and {data['unsealed_removed']} unsealed "
            f"ones created before {data['older_than']}")
    if data["checkpoint"] is not None and not data["dry_run"]:
        line += f"; checkpoint {data['checkpoint']} keeps the rest verifiable"
    stdout().print(line)
    if data["kept"]:
        stdout().print(f"kept (--keep): {', '.join(data['kept'])}")


def status(data: dict[str, Any]) -> None:
    out = stdout()
    table = Table(show_header=False, box=None)
    for key, value in data.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()
                              if k not in ("examples", "acl_pending"))
        table.add_row(key, str(value))
    out.print(table)
    stale = data.get("staleness") or {}
    if stale.get("examples"):
        out.print("stale sources (run 'ragcli reindex' on their corpus roots): "
                  + ", ".join(stale["examples"]))
    for change in stale.get("acl_pending") or []:
        out.print(Text(f"pending ACL change: {change['doc_id']}: {', '.join(change['stored'])} -> "
                       f"{', '.join(change['now'])} ({change['rule']})", style="yellow"))


def acl_decisions(rows: list[dict[str, Any]]) -> None:
    table = Table(box=None)
    for column in ("document", "groups", "rule"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["doc_id"], ", ".join(row["groups"]), row["rule"])
    stdout().print(table)


def traces(rows: list[dict[str, Any]]) -> None:
    out = stdout()
    if not rows:
        out.print("no audit records")
        return
    table = Table(box=None)
    for column in ("request id", "time", "user", "status", "version", "ms", "question"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["request_id"], row["created_at"][:19], str(row["user"]), row["status"],
                      str(row["index_version"]), str(row["total_ms"]),
                      (row["question"] or "")[:60])
    out.print(table)


def trace(record: Trace) -> None:
    out = stdout()
    for key in ("request_id", "created_at", "user", "groups", "status", "question", "answer",
                "refusal_reason", "index_version", "acl_filter", "confidence", "config_hash"):
        if key in record:
            out.print(f"{key}: {record[key]}")
    for hit in record.get("retrieved", []):
        out.print(f"  retrieved {hit['chunk_id']} score {hit['score']:.4f} "
                  f"hash {hit['chunk_hash'][:12]}")
    model = record.get("model") or {}
    if model:
        out.print(f"model: {model.get('path')} sha256 {model.get('sha256', '')[:16]}... "
                  f"{model.get('runtime', '')} {model.get('sampling', '')}")
        adapter = model.get("adapter")
        if adapter:
            out.print(f"adapter: {adapter.get('path')} sha256 {adapter.get('sha256', '')[:16]}...")
    reader = record.get("reader")
    if reader:
        choice = record.get("span_choice") or {}
        out.print(f"reader: {reader.get('id')} weights sha256 {reader.get('weights_sha256', '')[:16]}... "
                  f"onnx sha256 {reader.get('onnx_sha256', '')[:16]}... best span "
                  f"{choice.get('chosen')!r} score {choice.get('score')}")
    if record.get("prompt"):
        out.print("prompt:")
        out.print(Text(record["prompt"]["text"]))
    if record.get("output"):
        out.print(f"raw output: {record['output']['raw']!r}")
    if record.get("error"):
        out.print(f"error: {record['error']}")
    out.print(f"timings_ms: {record.get('timings_ms')}")


def replay(report: Any) -> None:
    out = stdout()
    verdict = {"identical": "identical", "drifted": "DRIFTED",
               "unverifiable": "UNVERIFIABLE"}[report.outcome]
    out.print(f"replay of {report.request_id} against {report.against} "
              f"(recorded version {report.recorded_version}, replayed on version "
              f"{report.replayed_version}): {verdict}")
    if report.served:
        out.print(Text(f"  the answer came from a served model ({report.served}): it was asked "
                       "again, but its weights cannot be checked, so its output cannot be "
                       "verified byte for byte", style="yellow"))
    for name, same in report.checks.items():
        out.print(f"  {name:<14} {'same' if same else 'differs'}")
    for name, ids in report.retrieval.items():
        if ids and name not in ("recorded", "replayed"):
            out.print(f"  {name}: {', '.join(ids)}")
    for name, diff in report.diffs.items():
        out.print(f"--- {name} diff ---")
        out.print(Text(diff))


def evaluation(result: Any, verdict: Any) -> None:
    out = stdout()
    table = Table(title=f"ragcli eval: {verdict.word}", title_justify="left", box=None)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        if not name.startswith("latency_") or name.startswith("latency_total"):
            table.add_row(name, f"{value:.4f}")
    out.print(table)
    out.print(f"{sum(c.passed for c in result.cases)}/{len(result.cases)} cases passed")
    routes(result.routes)
    for case in result.cases:
        if case.golden.id in verdict.unstable:
            now = "passed" if case.passed else "failed: " + "; ".join(case.failures)
            out.print(Text(f"  UNSTABLE {case.golden.id} (not gated: "
                           f"{verdict.unstable[case.golden.id]}): {now}", style="yellow"))
        elif not case.passed:
            out.print(f"  FAIL {case.golden.id}: {'; '.join(case.failures)}")
    for regression in verdict.regressions:
        out.print(Text(f"  REGRESSION {regression}", style="red"))


ROUTE_COLUMNS = (("cases", "cases", "{:.0f}"), ("share", "share", "{:.2f}"),
                 ("escalated_share", "escalated", "{:.2f}"), ("pass_rate", "pass", "{:.3f}"),
                 ("token_f1", "F1", "{:.3f}"), ("latency_p50_ms", "p50 ms", "{:.0f}"),
                 ("latency_p95_ms", "p95 ms", "{:.0f}"), ("cpu_s_total", "CPU s", "{:.1f}"),
                 ("usd_per_query", "USD/query", "{:.6f}"))
"""eval's per-route table (``--json`` has every figure: presence, CPU p50/p95, tokens ...)."""


def routes(report: dict[str, dict[str, float]]) -> None:
    """eval: quality, latency and cost of all cases and of each model's share."""
    table = Table(title="per route (quality, latency, cost)", title_justify="left", box=None,
                  padding=(0, 1), pad_edge=False)
    table.add_column("route")
    for _, title, _ in ROUTE_COLUMNS:
        table.add_column(title, justify="right")
    for name, row in report.items():
        table.add_row(name, *(fmt.format(row[key]) if key in row else "-"
                              for key, _, fmt in ROUTE_COLUMNS))
    wide_stdout().print(table)


def route_calibration(report: dict[str, Any]) -> None:
    """eval --calibrate --route small-first: the sweep of the escalation band and the choice."""
    out = stdout()
    knob = report["knob"]
    table = Table(title=f"{knob} sweep (small-first)", title_justify="left", box=None)
    for title in (knob, "pass", "F1", "right", "wrong", "escalated", "USD/query"):
        table.add_column(title, justify="right")
    sweep = report["sweep"]
    step = max(1, len(sweep) // 20)  # about 20 rows; --json has every one
    shown = [r for i, r in enumerate(sweep) if i % step == 0 or r is report["best"]
             or i == len(sweep) - 1]
    for row in shown:
        table.add_row(f"{row[knob]:.4f}", f"{row['pass_rate']:.3f}", f"{row['token_f1']:.3f}",
                      f"{row['answered_right']:.0f}", f"{row['wrong_answers']:.0f}",
                      f"{row['escalated_share']:.2f}", f"{row['usd_per_query']:.6f}")
    out.print(table)
    if len(shown) < len(sweep):
        out.print(f"({len(shown)} of {len(sweep)} rows; --json lists every one)", style="dim")
    for name in ("small_alone", "large_alone"):
        row = report[name]
        out.print(f"{name.replace('_', ' ')}: pass {row.get('pass_rate', 0):.3f}, "
                  f"USD/query {row.get('usd_per_query', 0):.6f}, "
                  f"p50 {row.get('latency_p50_ms', 0):.0f} ms")
    best = report["best"]
    if best is None:
        out.print(Text(f"no {knob} fits the budget (even the lowest escalates the questions the "
                       "small route fails)", style="yellow"))
    else:
        out.print(f"{knob} = {best[knob]:.4f}: pass {best['pass_rate']:.3f}, F1 "
                  f"{best['token_f1']:.3f}, {best['escalated_share']:.0%} escalated, USD/query "
                  f"{best['usd_per_query']:.6f} (now {report['current']})")


def calibration(report: dict[str, Any]) -> None:
    """Per threshold: each set's wrong refusals / wrong answers, and the mean error rate."""
    out = stdout()
    names = report["sets"]
    table = Table(title="refusal threshold sweep (wrong refusals / wrong answers per set)",
                  title_justify="left", box=None)
    table.add_column("threshold", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("mean error rate", justify="right")
    for row in report["sweep"]:
        mark = " <- best" if row is report["best"] else \
            " (current)" if abs(row["threshold"] - report["current"]) < 1e-9 else ""
        table.add_row(f"{row['threshold']:.2f}",
                      *(f"{row[n]['wrong_refusals']:.0f} / {row[n]['wrong_answers']:.0f}" for n in names),
                      f"{row['error_rate']:.3f}{mark}")
    out.print(table)
    best = report["best"]
    out.print(f"best min_confidence: {best['threshold']:.2f} (mean error rate "
              f"{best['error_rate']:.3f}; " + ", ".join(
                  f"{n}: {best[n]['wrong_refusals']:.0f} wrong refusals, "
                  f"{best[n]['wrong_answers']:.0f} wrong answers" for n in names) + ")")
    if report.get("reader"):
        reader_calibration(report["reader"])


def reader_calibration(report: dict[str, Any]) -> None:
    """The reader's risk-coverage per set, and the min_reader_score chosen."""
    out = stdout()
    for name, rows in report["risk_coverage"].items():
        out.print(risk_coverage_table(name, rows))
    best = report["best"]
    out.print(f"best min_reader_score: {best['threshold']:.3f} (mean error rate "
              f"{best['error_rate']:.3f}; current {report['current']:.3f}; " + ", ".join(
                  f"{n}: {r['answered']:.0%} answered, wrong rate {r['wrong_rate']:.3f}"
                  for n, r in report["at_best"].items() if r) + ")")


def risk_coverage_table(name: str, rows: list[dict[str, Any]]) -> Table:
    """Wrong-answer rate at each share of answerable questions answered (reader score order)."""
    table = Table(title=f"{name}: risk-coverage of the reader's score", title_justify="left",
                  box=None)
    for title in ("answered", "min_reader_score", "right", "wrong", "wrong rate", "absent answered"):
        table.add_column(title, justify="right")
    for row in rows:
        table.add_row(f"{row['answered']:.0%}", f"{row['threshold']:.3f}", f"{row['right']:.0f}",
                      f"{row['wrong']:.0f}", f"{row['wrong_rate']:.3f}",
                      f"{row['absent_answered']:.0f}")
    return table


def tune_table(rows: list[dict[str, Any]], title: str = "base model vs adapter") -> None:
    """ragcli tune: base model vs adapter (or current reader vs tuned) on each --eval set."""
    table = Table(title=title, title_justify="left", box=None)
    columns = (("set", "set", "{}"), ("model", "model", "{}"), ("cases", "cases", "{}"),
               ("EM", "exact_match", "{:.3f}"), ("F1", "token_f1", "{:.3f}"),
               ("right", "answered_right", "{:.0f}"), ("wrong", "wrong_answers", "{:.0f}"),
               ("refused", "refused_answerable", "{:.0f}"),
               ("wrong rate", "wrong_answer_rate", "{:.3f}"),
               ("absent refused", "absent_topic_refused", "{:.3f}"),
               ("p50 ms", "latency_total_p50_ms", "{:.0f}"))
    for title, _, _ in columns:
        table.add_column(title, justify="left" if title in ("set", "model") else "right",
                         no_wrap=True)
    for row in rows:
        table.add_row(*(fmt.format(row[key]) if key in row else "-" for _, key, fmt in columns))
    stdout().print(table, width=max(stdout().width, 120))  # a log file gets every column


def verified(path: Any, rows: int, documents: int) -> None:
    stdout().print(f"store {path} verified: {rows} chunks of {documents} documents read back; "
                   "files, vectors, hashes and ids are consistent")
