"""Audit trail and replay: exact and drift replays, the chaos scenarios, concurrent asks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import HANDBOOK
from fakes import EchoGenerator, HashEmbedder
from ragcli.answer.answering import Answerer
from ragcli.answer.replay import replay
from ragcli.audit.trace import AuditLog
from ragcli.cli.app import app
from ragcli.errors import ExitCode, ModelChangedError, StoreError, StoreMissingError, VersionGoneError
from ragcli.ingest.indexing import reindex
from ragcli.settings import Settings

QUESTION = "How many weeks of paid parental leave do non-birthing parents get?"
RUNNER = Path(__file__).resolve().parent / "run_with_fakes.py"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    shutil.copytree(HANDBOOK, root)
    return root


@pytest.fixture
def settings(tmp_path: Path, corpus: Path, hash_embedder: HashEmbedder) -> Settings:
    reindex([corpus], tmp_path / "store", hash_embedder)
    return Settings(store=tmp_path / "store", audit=tmp_path / "audit.sqlite3",
                    min_confidence=0.3, embedder="test-hash", mode="generative")


def ask(settings: Settings, question: str = QUESTION, groups: tuple[str, ...] = ()) -> dict:  # type: ignore[type-arg]
    answer = Answerer(settings, HashEmbedder(), EchoGenerator).ask(question, user="ana",
                                                                   groups=list(groups))
    record = AuditLog(settings.audit).get(answer.request_id)
    assert record is not None
    return record


def run_replay(record: dict, against: str = "recorded"):  # type: ignore[no-untyped-def,type-arg]
    return replay(record, against=against, embedder=HashEmbedder(),
                  generator_factory=lambda path, s: EchoGenerator())


def test_exact_replay_is_identical(settings: Settings) -> None:
    record = ask(settings)
    assert record["status"] == "answered"
    report = run_replay(record)
    assert report.identical, report.to_json()
    assert report.checks == {"retrieval": True, "prompt": True, "output": True, "answer": True,
                             "short_answer": True, "refused": True}


def test_auto_mode_replays_the_span_choice(settings: Settings) -> None:
    """Mode auto records the span prompt and the chosen span; replay scores the spans again and
    reports a different choice (here: a model that now prefers another span) as a difference."""
    auto = replace(settings, mode="auto", span_reader="gguf")  # the model chooses the span
    answer = Answerer(auto, HashEmbedder(), EchoGenerator).ask(QUESTION, user="ana", groups=[])
    record = AuditLog(settings.audit).get(answer.request_id)
    assert record["span_choice"]["method"] == "model" and record["short_answer"]
    report = run_replay(record)
    assert report.identical and report.checks["short_answer"], report.to_json()
    changed = replay(record, against="recorded", embedder=HashEmbedder(),
                     generator_factory=lambda path, s: EchoGenerator(span="fully paid leave"))
    assert not changed.identical and not changed.checks["short_answer"]
    assert changed.answers["replayed_short"] == "fully paid leave"


def test_changed_source_exact_still_identical_drift_reports(settings: Settings, corpus: Path,
                                                            hash_embedder: HashEmbedder) -> None:
    record = ask(settings)
    first = record["retrieved"][0]["chunk_id"]
    doc = corpus / "hr" / "parental-leave.md"
    doc.write_text(doc.read_text().replace("**16 weeks**", "**18 weeks**")
                   .replace("**20 weeks**", "**22 weeks**"))
    assert reindex([corpus], settings.store, hash_embedder).changed == 1
    assert run_replay(record).identical  # the pinned version still answers the same
    drift = run_replay(record, "latest")
    assert not drift.identical
    assert first in drift.retrieval["changed"]
    assert not drift.checks["answer"] and not drift.checks["prompt"]
    assert "+" in drift.diffs["answer"] and "weeks" in drift.diffs["answer"]
    assert "18 weeks" in drift.diffs["prompt"] and "22 weeks" in drift.diffs["prompt"]


def test_revoked_group_is_reported_as_now_denied(settings: Settings, corpus: Path,
                                                 hash_embedder: HashEmbedder) -> None:
    record = ask(settings)
    leave_chunks = [r["chunk_id"] for r in record["retrieved"]
                    if r["doc_id"] == "hr/parental-leave.md"]
    assert leave_chunks
    doc = corpus / "hr" / "parental-leave.md"
    doc.write_text(doc.read_text().replace("title: Parental leave policy",
                                           "title: Parental leave policy\nacl: [hr]"))
    assert reindex([corpus], settings.store, hash_embedder).acl_changed == 1
    drift = run_replay(record, "latest")
    assert set(leave_chunks) <= set(drift.retrieval["now_denied"])
    assert not set(leave_chunks) & set(drift.retrieval["replayed"])  # so not in the new prompt
    added = [ln for ln in drift.diffs["prompt"].splitlines() if ln.startswith("+")]
    assert not [ln for ln in added if "Parental leave policy" in ln]


def test_retrieval_outage_fails_clearly_and_is_audited(settings: Settings) -> None:
    shutil.rmtree(settings.store / "lancedb" / "chunks.lance" / "data")
    with pytest.raises(StoreError, match="cannot be read"):
        ask(settings)
    missing = replace(settings, store=settings.store.parent / "gone")
    with pytest.raises(StoreMissingError):
        ask(missing)
    failed = list(AuditLog(settings.audit).recent(10, status="failed"))
    assert [r["error"]["exit_code"] for r in failed] == [ExitCode.STORE_MISSING, ExitCode.STORE]


def test_replay_refuses_when_version_or_model_is_gone(settings: Settings) -> None:
    record = ask(settings)
    with pytest.raises(VersionGoneError):
        run_replay({**record, "index_version": 999})
    with pytest.raises(ModelChangedError):
        run_replay({**record, "model": {**record["model"], "sha256": "f" * 64}})


def test_cli_traces_and_replay(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGCLI_AUDIT", str(settings.audit))
    monkeypatch.setenv("RAGCLI_STORE", str(settings.store))
    monkeypatch.setenv("RAGCLI_EMBEDDER", "test-hash")
    runner = CliRunner()
    result = runner.invoke(app, ["ask", QUESTION, "--mode", "extractive", "--json"])
    assert result.exit_code == 0, result.output
    request_id = json.loads(result.stdout)["request_id"]
    listed = json.loads(runner.invoke(app, ["traces", "--json"]).stdout)
    assert [r["request_id"] for r in listed] == [request_id]
    shown = json.loads(runner.invoke(app, ["traces", "show", request_id, "--json"]).stdout)
    assert shown["mode"] == "extractive" and shown["question"] == QUESTION
    exported = runner.invoke(app, ["traces", "export"]).stdout.splitlines()
    assert json.loads(exported[0])["request_id"] == request_id
    replayed = runner.invoke(app, ["replay", request_id, "--json"])
    assert replayed.exit_code == 0 and json.loads(replayed.stdout)["identical"] is True
    missing = runner.invoke(app, ["replay", "0190b1b1-0000-7000-8000-000000000000"])
    assert missing.exit_code == ExitCode.TRACE_NOT_FOUND
    assert "no audit record" in missing.stderr


def test_eight_concurrent_asks_leave_eight_readable_records(settings: Settings) -> None:
    env = {**os.environ, "RAGCLI_EMBEDDER": "test-hash", "RAGCLI_STORE": str(settings.store),
           "RAGCLI_AUDIT": str(settings.audit), "RAGCLI_MIN_CONFIDENCE": "0.3"}
    procs = [subprocess.Popen([sys.executable, str(RUNNER), "ask", f"{QUESTION} ({i})",
                               "--mode", "extractive", "--json", "--user", f"u{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(8)]
    ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        ids.append(json.loads(out)["request_id"])
    log = AuditLog(settings.audit)
    assert len(set(ids)) == 8
    for request_id in ids:
        record = log.get(request_id)
        assert record is not None and record["status"] in ("answered", "refused")
