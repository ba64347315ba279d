"""Audit records that survive a crash and keep no passage text when redacted."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakes import EchoGenerator
from ragcli.audit.trace import AuditLog
from ragcli.cli import ask as ask_command
from ragcli.cli.app import app
from ragcli.errors import ExitCode
from ragcli.store.store import Store

runner = CliRunner()
RUNNER = Path(__file__).resolve().parent / "run_with_fakes.py"


@pytest.fixture
def env(handbook_store: Path, cli_env: dict[str, str]) -> dict[str, str]:
    return cli_env


@pytest.mark.parametrize("mode", ["generative", "auto"])
def test_a_process_killed_during_generation_leaves_an_interrupted_record(
        env: dict[str, str], tmp_path: Path, mode: str) -> None:
    proc = subprocess.Popen([sys.executable, str(RUNNER), "ask", "How many weeks of paid "
                             "parental leave do non-birthing parents get?", "--json",
                             "--mode", mode],
                            env={**os.environ, **env, "FAKE_GENERATOR": "hang"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    audit = tmp_path / "audit.sqlite3"
    deadline = time.monotonic() + 60
    record = None
    while time.monotonic() < deadline:  # until the prompt is on disk: the model is running
        if audit.exists():
            try:  # the file can exist a moment before its table does
                with sqlite3.connect(audit) as connection:
                    row = connection.execute("SELECT record FROM traces").fetchone()
            except sqlite3.OperationalError:
                row = None
            record = json.loads(row[0]) if row else None
            if record and "prompt" in record:
                break
        time.sleep(0.1)
    assert record and "prompt" in record and record["status"] == "started"
    assert proc.poll() is None  # still generating
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    shown = json.loads(runner.invoke(app, ["traces", "show", record["request_id"], "--json"]).stdout)
    assert shown["status"] == "interrupted"
    assert "non-birthing" in shown["prompt"]["text"]  # what the model was given survives
    listed = json.loads(runner.invoke(app, ["traces", "--interrupted", "--json"]).stdout)
    assert [r["request_id"] for r in listed] == [record["request_id"]]
    assert listed[0]["status"] == "interrupted"
    replayed = runner.invoke(app, ["replay", record["request_id"]])
    assert replayed.exit_code == ExitCode.TRACE_NOT_FOUND
    assert "never completed (interrupted" in replayed.stderr


def test_a_live_request_reads_as_started_and_a_completed_one_is_never_rewritten(
        tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.sqlite3")
    record = {"request_id": "r1", "created_at": "2026-11-22T00:00:00", "user": "u",
              "status": "answered", "refused": False}
    log.start(record)
    assert log.get("r1")["status"] == "started"  # this process is alive
    log.complete(record)
    assert log.get("r1")["status"] == "answered"
    with pytest.raises(Exception, match="not open for writing"):
        log.complete({**record, "status": "refused"})
    assert log.get("r1")["status"] == "answered"


@pytest.mark.parametrize("mode", ["extractive", "auto"])
def test_redacted_records_keep_no_passage_text(env: dict[str, str], tmp_path: Path, mode: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGCLI_REDACT_AUDIT", "true")
    monkeypatch.setattr(ask_command, "gguf_generator", lambda settings: EchoGenerator())
    result = runner.invoke(app, ["ask", "What is the hostname of the office print server?",
                                 "--mode", mode, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    record = AuditLog(tmp_path / "audit.sqlite3").get(data["request_id"])
    assert record["redacted"] and record["screening"]  # the poisoned printer page was screened
    for entry in record["screening"].values():
        assert entry["redacted"] and all(t.startswith("[redacted sha256:") for t in entry["redacted"])
    blob = json.dumps(record)
    assert data["short_answer"] and data["short_answer"] not in blob  # nor the quote's spans
    assert record["quote"]["text"].startswith("[redacted sha256:")
    rows = Store.open(tmp_path / "store").rows([h["chunk_id"] for h in data["retrieved"]], ["text"])
    for row in rows.values():
        for line in row["text"].splitlines():
            if len(line.strip()) > 25:
                assert line.strip() not in blob, line


def test_a_new_audit_log_set_up_by_several_writers_at_once_loses_nothing(tmp_path: Path) -> None:
    """Writers that find no audit log yet (concurrent asks on a new machine, ask --batch's
    workers) all set it up at once: SQLite tells one of them "database is locked" without
    waiting while another changes the journal mode; it tries again, and no record is lost."""
    from conftest import at_once

    for attempt in range(40):
        log = AuditLog(tmp_path / f"audit-{attempt}.sqlite3")
        errors = at_once(lambda n, log=log: log.append(  # type: ignore[misc]
            {"request_id": f"r{n}", "created_at": "2026-11-24T00:00:00+00:00", "user": "u",
             "status": "answered", "refused": False}), 4)
        assert errors == [] and len(list(log.recent(10))) == 4
