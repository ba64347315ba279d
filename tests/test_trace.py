"""The audit record's published shape (schemas/trace.schema.json, ragcli/trace.Trace): every
record ragcli writes validates, records of the older format still read, and eval takes the record
returned with the answer instead of reading the log back."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from openai_stub import Stub
from typer.testing import CliRunner

from fakes import EchoGenerator, HashEmbedder
from ragcli.answer.answering import Answerer
from ragcli.audit.trace import STARTED, TRACE_FORMAT, AuditLog
from ragcli.cli.app import app
from ragcli.errors import UsageError
from ragcli.evaluate.evaluation import Golden, evaluate
from ragcli.schema import schema_problems
from ragcli.settings import Settings

OLD = Path(__file__).parent / "data" / "traces-format-1.jsonl"
QUESTION = "How many weeks of parental leave?"


@pytest.fixture
def settings(tmp_path: Path, handbook_store: Path) -> Settings:
    return Settings(store=tmp_path / "store", audit=tmp_path / "audit.sqlite3",
                    min_confidence=0.3, mode="generative")


def test_every_kind_of_record_matches_the_published_schema(settings: Settings) -> None:
    stub = Stub()
    try:
        runs = [
            (settings, EchoGenerator(), QUESTION),  # answered, generated
            (replace(settings, mode="auto"), EchoGenerator(span="16 weeks"), QUESTION),
            (replace(settings, mode="extractive"), EchoGenerator(), QUESTION),
            (settings, EchoGenerator(reply="I don't know."), QUESTION),  # model declined
            (settings, EchoGenerator(), "zebra xylophone quokka"),  # refused: low confidence
            (replace(settings, route="small-first", large_url=stub.url),
             EchoGenerator(reply="The moon is made of cheese [1]."), QUESTION),  # escalated
            (replace(settings, route="large", large_url=stub.url, redact_audit=True),
             EchoGenerator(), QUESTION),
        ]
        for run_settings, generator, question in runs:
            Answerer(run_settings, HashEmbedder(), lambda g=generator: g).ask(
                question, user="ana", groups=[])
        with pytest.raises(UsageError):  # a failed request is recorded too
            Answerer(settings, HashEmbedder(), EchoGenerator).ask(" ", user="ana", groups=[])
    finally:
        stub.close()
    log = AuditLog(settings.audit)
    log.append({"request_id": "01a20000-0000-7000-8000-000000000000", "created_at":
                "2026-11-23T00:00:00+00:00", "user": "ana", "groups": [], "question": "q",
                "settings": {}, "mode": "auto", "status": STARTED, "refused": False,
                "format": TRACE_FORMAT, "pid": 2**22 + 1, "host": socket.gethostname()})
    records = list(log.recent(None))
    assert len(records) == len(runs) + 2
    assert {r["status"] for r in records} >= {"answered", "refused", "failed", "interrupted"}
    assert any(r.get("attempts") for r in records) and any(r.get("redacted") for r in records)
    for record in records:
        assert schema_problems(record, "trace") == [], record["request_id"]
        assert record["format"] == TRACE_FORMAT


def test_format_1_records_still_read(settings: Settings) -> None:
    """Records written before ``format`` (tests/data: an answered, a refused and a failed one
    from the audit log of an earlier ragcli) read as format 1, match the schema, and every reader
    takes them: traces, traces show, traces stats."""
    log = AuditLog(settings.audit)
    old = [json.loads(line) for line in OLD.read_text().splitlines()]
    assert all("format" not in r for r in old)
    for record in old:
        log.append(record)
    for record in old:
        read = log.get(record["request_id"])
        assert read is not None and read["format"] == 1
        assert schema_problems(read, "trace") == []
        assert "cost" not in read  # unknown then: absent, not zero
    runner = CliRunner()
    env = {"RAGCLI_AUDIT": str(settings.audit)}
    listed = runner.invoke(app, ["traces", "--json", "--since", "2000-01-01"], env=env)
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)) == len(old)
    shown = runner.invoke(app, ["traces", "show", old[0]["request_id"]], env=env)
    assert shown.exit_code == 0 and old[0]["question"] in shown.stdout
    stats = runner.invoke(app, ["traces", "stats", "--json", "--since", "2000-01-01"], env=env)
    (day,) = json.loads(stats.stdout)
    assert day["requests"] == 3 and day["usd"] == 0.0 and day["failed"] == 1


def test_eval_uses_the_record_returned_with_the_answer(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    answerer = Answerer(settings, HashEmbedder(), EchoGenerator)
    answer = answerer.ask(QUESTION, user="ana", groups=[])
    stored = AuditLog(settings.audit).get(answer.request_id)
    assert stored is not None and answer.trace is not None
    assert answer.trace == {k: v for k, v in stored.items() if k not in ("pid", "host")}

    def no_read_back(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval read the audit log back")

    monkeypatch.setattr(AuditLog, "get", no_read_back)
    golden = Golden(id="leave", question=QUESTION, expected_docs=("hr/parental-leave.md",))
    result = evaluate([golden], answerer)
    (case,) = result.cases
    assert case.prompt_docs == ["hr/parental-leave.md"]  # read from the returned record
