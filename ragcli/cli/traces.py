"""traces (list, show, stats, export, verify, prune) and replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import ExitCode

if TYPE_CHECKING:
    from ..audit.trace import Trace
from . import render
from .common import AuditOpt, ConfigOpt, JsonOpt, RagGroup, gguf_generator, settings_from

traces_app = typer.Typer(help="The audit log: one record per ask (answered, refused, failed, "
                         "or interrupted when its process ended first).",
                         cls=RagGroup, no_args_is_help=False, add_completion=False,
                         rich_markup_mode=None)
@traces_app.callback(invoke_without_command=True)
def traces(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's requests.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only requests at or after this "
                     "ISO-8601 time (e.g. 2026-11-22 or 2026-11-22T10:00).")] = None,
    refused: Annotated[bool, typer.Option("--refused", help="Only refusals.")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Only failures.")] = False,
    interrupted: Annotated[bool, typer.Option("--interrupted", help="Only requests that never "
                           "completed (started, or interrupted: the process ended).")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 20,
    audit: AuditOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List recent requests, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    from ..audit.trace import AuditLog
    from ..errors import UsageError

    if refused + failed + interrupted > 1:
        raise UsageError("--refused, --failed and --interrupted exclude each other")
    if since is not None:
        _check_since(since)
    settings = settings_from(config, audit=audit)
    status = "refused" if refused else "failed" if failed else "started" if interrupted else None
    records = list(AuditLog.of(settings).recent(limit, user=user, since=since, status=status))
    if as_json:
        render.print_json([_trace_summary(r) for r in records])
    else:
        render.traces([_trace_summary(r) for r in records])


def _check_since(since: str) -> None:
    from datetime import datetime

    from ..errors import UsageError

    try:
        datetime.fromisoformat(since)
    except ValueError:
        raise UsageError(f"--since must be an ISO-8601 time such as 2026-11-22 or "
                         f"2026-11-22T10:00, got {since!r}") from None


def _trace_summary(record: Trace) -> dict[str, Any]:
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


@traces_app.command("stats")
def traces_stats(
    since: Annotated[str | None, typer.Option("--since", help="From this ISO-8601 day or time "
                     "(e.g. 2026-11-22) [default: the last 7 days].", show_default=False)] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's requests.")] = None,
    audit: AuditOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per day: requests, refusals, failures, escalations, tokens, CPU, cost, latency p50/p95."""
    from datetime import UTC, datetime, timedelta

    from ..audit.trace import AuditLog, daily_stats

    if since is None:
        since = (datetime.now(UTC) - timedelta(days=6)).date().isoformat()
    else:
        _check_since(since)
    settings = settings_from(config, audit=audit)
    rows = daily_stats(AuditLog.of(settings).recent(None, user=user, since=since))
    if as_json:
        render.print_json(rows)
    else:
        render.trace_stats(rows, since)


@traces_app.command("export")
def traces_export(
    otlp: Annotated[str | None, typer.Option("--otlp", help="Send the records as OpenTelemetry "
                    "traces to this OTLP/HTTP receiver (e.g. http://127.0.0.1:6006) instead of "
                    "printing JSON Lines.", show_default=False)] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only requests at or after this "
                     "ISO-8601 time.", show_default=False)] = None,
    audit: AuditOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Every record, oldest first: JSON Lines on stdout, or traces to an OTLP receiver (--otlp;
    content only with the otlp_content setting)."""
    import sys

    from ..audit.trace import AuditLog

    if since is not None:
        _check_since(since)
    settings = settings_from(config, audit=audit)
    records = list(reversed(list(AuditLog.of(settings).recent(None, since=since))))
    if otlp is None:
        for record in records:
            sys.stdout.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        return
    finished = [r for r in records if r["status"] not in ("started", "interrupted")]
    _export_otlp(finished, otlp, settings.otlp_timeout, settings.otlp_content)


def _export_otlp(records: list[Trace], url: str, timeout: float, content: bool) -> None:
    from ..audit import telemetry
    from ..errors import ExportFailedError, UsageError
    from ..settings import check_url

    try:
        check_url(url)
    except ValueError as exc:
        raise UsageError(f"--otlp {exc}") from None
    sent = spans = 0
    sender = telemetry.Sender(url, timeout=timeout, content=content)  # one connection for all
    try:
        for begin in range(0, len(records), 100):
            batch = records[begin:begin + 100]
            try:
                spans += sender.send(batch)
            except telemetry.ExportError as exc:
                raise ExportFailedError(f"{exc} ({sent} of {len(records)} records sent "
                                        "before)") from None
            sent += len(batch)
    finally:
        sender.close()
    render.stdout().print(f"sent {sent} records ({spans} spans) to {telemetry.traces_url(url)}")


@traces_app.command("verify")
def traces_verify(audit: AuditOpt = None, config: ConfigOpt = None,
                  as_json: JsonOpt = False) -> None:
    """Walk the audit log's hash chain: exit 0 when intact, 23 naming the first record edited,
    deleted, reordered or inserted."""
    from ..audit.trace import AuditLog

    log = AuditLog.of(settings_from(config, audit=audit))
    report = log.verify()
    if as_json:
        render.print_json({"audit": str(log.path), **report.to_json()})
    else:
        render.chain_report(str(log.path), report, log.key_env)
    if not report.ok:
        raise typer.Exit(int(ExitCode.AUDIT_TAMPERED))


@traces_app.command("prune")
def traces_prune(
    older_than: Annotated[str, typer.Option("--older-than", help="Remove records created before "
                          "this long ago (90d, 12h, 2w) or before this ISO-8601 time.",
                          show_default=False)],
    keep: Annotated[list[str] | None, typer.Option("--keep", help="A request ID to keep (a "
                    "baseline or an open incident pins it); repeatable.", show_default=False)
                    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove "
                       "nothing.")] = False,
    audit: AuditOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove old records, leaving a sealed checkpoint so the rest still verifies (the chain is
    verified first: a broken one is not pruned)."""
    from ..audit.trace import AuditLog

    cutoff = _cutoff(older_than)
    log = AuditLog.of(settings_from(config, audit=audit))
    pruned = log.prune(cutoff, set(keep or ()), dry_run=dry_run)
    data = {"audit": str(log.path), "older_than": cutoff, "dry_run": dry_run, **pruned.to_json()}
    if as_json:
        render.print_json(data)
    else:
        render.prune_report(data)


def _cutoff(older_than: str) -> str:
    """``--older-than`` as an ISO-8601 UTC time: a duration back from now, or a time."""
    import re
    from datetime import UTC, datetime, timedelta

    from ..errors import UsageError

    match = re.fullmatch(r"(\d+)([hdw])", older_than.strip())
    if match:
        hours = int(match[1]) * {"h": 1, "d": 24, "w": 168}[match[2]]
        return (datetime.now(UTC) - timedelta(hours=hours)).isoformat(timespec="seconds")
    try:
        when = datetime.fromisoformat(older_than)
    except ValueError:
        raise UsageError(f"--older-than must be a duration such as 90d, 12h or 2w, or an "
                         f"ISO-8601 time such as 2026-09-01, got {older_than!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).isoformat(
        timespec="seconds")


def _find_record(request_id: str, config: Path | None, audit: Path | None) -> Trace:
    from ..audit.trace import AuditLog

    return AuditLog.of(settings_from(config, audit=audit)).require(request_id)


def replay(
    request_id: Annotated[str, typer.Argument(help="The request ID to re-run.")],
    against: Annotated[str, typer.Option("--against", help="recorded: exact replay at the "
                       "recorded store version; latest: drift against the current index.")
                       ] = "recorded",
    audit: AuditOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    question: Annotated[str | None, typer.Option("--question", help="The original question, to "
                        "replay a record written with redact_audit (checked against its hash).",
                        show_default=False)] = None,
) -> None:
    """Re-run a past answer and show what differs (exit 0 identical, 10 drifted, 22
    unverifiable: a served model answered)."""
    from ..answer.replay import replay_request
    from ..errors import UsageError

    if against not in ("recorded", "latest"):
        raise UsageError("--against must be 'recorded' or 'latest'")
    from ..audit.trace import AuditLog

    record, sealed = AuditLog.of(settings_from(config, audit=audit)).verified(request_id)
    if sealed == "legacy":
        render.warning(f"record {request_id} was written before the audit log's hash chain: it "
                    "cannot be verified")
    report = replay_request(record, against=against,
                            question=question,
                            generator_factory=lambda path, s: gguf_generator(s, path))
    if as_json:
        render.print_json(report.to_json())
    else:
        render.replay(report)
    if report.outcome == "unverifiable":
        raise typer.Exit(int(ExitCode.UNVERIFIABLE))
    if not report.identical:
        raise typer.Exit(int(ExitCode.DRIFTED))
