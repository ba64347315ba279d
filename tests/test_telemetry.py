"""OpenTelemetry export with OpenInference's conventions: what a trace carries (and never carries),
live export that a collector down or slow cannot slow or fail, and ``traces export --otlp``, all
through a receiver that decodes OTLP/HTTP protobuf as a collector does (tests/otlp_receiver.py;
tests/test_real_components.py runs Arize Phoenix itself)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from otlp_receiver import Receiver, closed_url
from ragcli.audit import telemetry
from ragcli.audit.trace import AuditLog
from ragcli.cli import ask as ask_command
from ragcli.cli.app import app
from ragcli.errors import ExitCode

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
runner = CliRunner()
RUNNER = Path(__file__).resolve().parent / "run_with_fakes.py"
QUESTION = "How many weeks of paid parental leave do non-birthing parents get?"


@pytest.fixture
def env(handbook_store: Path, cli_env: dict[str, str]) -> dict[str, str]:
    return cli_env


def asked(mode: str = "extractive", monkeypatch: pytest.MonkeyPatch | None = None) -> dict:
    if monkeypatch is not None:
        from fakes import EchoGenerator

        monkeypatch.setattr(ask_command, "gguf_generator", lambda settings: EchoGenerator())
    result = runner.invoke(app, ["ask", QUESTION, "--mode", mode, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def by_name(spans: list[dict]) -> dict[str, dict]:
    return {s["name"]: s for s in spans}


def test_a_trace_carries_ids_scores_and_decisions_and_no_text_by_default(
        env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = asked("auto", monkeypatch)
    record = AuditLog(tmp_path / "audit.sqlite3").require(data["request_id"])
    with Receiver() as receiver:
        result = runner.invoke(app, ["traces", "export", "--otlp", receiver.url])
        assert result.exit_code == 0, result.output
        assert "sent 1 records" in result.stdout
    spans = by_name(receiver.spans)
    assert {s["trace_id"] for s in receiver.spans} == {data["request_id"].replace("-", "")}
    root = spans["ask"]
    assert root["parent_id"] == "" and root["attributes"]["openinference.span.kind"] == "CHAIN"
    assert root["attributes"]["ragcli.request_id"] == data["request_id"]
    assert root["attributes"]["user.id"] == record["user"]
    assert root["attributes"]["ragcli.status"] == "answered"
    assert root["attributes"]["ragcli.exit_code"] == 0
    assert root["service"]["service.name"] == "ragcli"
    assert "claim_check" in root["events"]
    fused = spans["retrieve"]["attributes"]
    assert fused["openinference.span.kind"] == "RETRIEVER"
    for i, hit in enumerate(record["retrieved"]):
        assert fused[f"retrieval.documents.{i}.document.id"] == hit["chunk_id"]
        assert fused[f"retrieval.documents.{i}.document.score"] == pytest.approx(hit["score"])
    for leg, key in (("retrieve.vector", "vector_score"), ("retrieve.fts", "fts_score")):
        attributes = spans[leg]["attributes"]
        assert attributes["openinference.span.kind"] == "RETRIEVER"
        legs = {attributes[f"retrieval.documents.{i}.document.id"]:
                attributes[f"retrieval.documents.{i}.document.score"]
                for i in range(len(record["retrieved"]))
                if f"retrieval.documents.{i}.document.id" in attributes}
        assert legs == pytest.approx({h["chunk_id"]: h[key] for h in record["retrieved"]
                                      if h[key] is not None})
        assert spans[leg]["parent_id"] == spans["retrieve"]["span_id"]
    llm = spans["span"]["attributes"]
    assert llm["openinference.span.kind"] == "LLM"
    assert llm["llm.model_name"] and llm["ragcli.model.sha256"] == record["model"]["sha256"]
    usage = record["usage"]["small"]
    assert llm["llm.token_count.prompt"] == usage["prompt_tokens"]
    assert llm["llm.token_count.total"] == usage["prompt_tokens"] + usage["completion_tokens"]
    for span in receiver.spans:  # inside the request, and never its words
        assert root["start"] <= span["start"] <= span["end"] <= root["end"] + 1000
        blob = json.dumps(span["attributes"])
        assert "non-birthing" not in blob.lower() and data["answer"][:20] not in blob


def test_content_is_exported_only_when_the_setting_allows_it(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    data = asked()
    monkeypatch.setenv("RAGCLI_OTLP_CONTENT", "true")
    with Receiver() as receiver:
        assert runner.invoke(app, ["traces", "export", "--otlp", receiver.url]).exit_code == 0
    root = by_name(receiver.spans)["ask"]["attributes"]
    assert root["input.value"] == QUESTION and root["output.value"] == data["answer"]
    for span in receiver.spans:  # passage text: never, even then
        assert "document.content" not in json.dumps(span["attributes"])


def test_live_export_sends_each_answer_while_answering(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with Receiver() as receiver:
        monkeypatch.setenv("RAGCLI_OTLP_ENDPOINT", receiver.url)
        first, second = asked(), asked()
        live = telemetry.live(receiver.url, timeout=2.0, content=False)
        assert live.flush(10)
    traces = {s["trace_id"] for s in receiver.spans if s["name"] == "ask"}
    assert traces == {first["request_id"].replace("-", ""), second["request_id"].replace("-", "")}


def test_a_one_shot_ask_sends_its_trace_before_the_process_ends(
        env: dict[str, str]) -> None:
    """The last export of an ``ask`` runs while the interpreter shuts down (no new thread pools
    then): the trace must still arrive, with no warning."""
    with Receiver() as receiver:
        proc = subprocess.run([sys.executable, str(RUNNER), "ask", QUESTION, "--mode",
                               "extractive", "--json"],
                              env={**os.environ, **env, "RAGCLI_OTLP_ENDPOINT": receiver.url},
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    request_id = json.loads(proc.stdout)["request_id"]
    assert {s["trace_id"] for s in receiver.spans} == {request_id.replace("-", "")}
    assert {"ask", "retrieve", "retrieve.vector", "retrieve.fts", "extract"} <= {
        s["name"] for s in receiver.spans}


def test_a_collector_that_is_down_costs_an_answer_nothing_but_one_warning(
        env: dict[str, str], tmp_path: Path) -> None:
    url = closed_url()
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(RUNNER), "ask", QUESTION, "--mode", "extractive",
                           "--json"], env={**os.environ, **env, "RAGCLI_OTLP_ENDPOINT": url},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - started < 60
    data = json.loads(proc.stdout)
    assert data["answer"]
    warnings = [line for line in proc.stderr.splitlines() if "OpenTelemetry export failed" in line]
    assert len(warnings) == 1 and url.split("//")[1] in warnings[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert AuditLog(tmp_path / "audit.sqlite3").require(data["request_id"])["status"] == "answered"


def test_a_slow_collector_does_not_hold_up_the_answer(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with Receiver(delay=3.0) as receiver:
        monkeypatch.setenv("RAGCLI_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("RAGCLI_OTLP_TIMEOUT", "0.5")
        asked()  # warm: the store and embedder are loaded
        live = telemetry.live(receiver.url, timeout=0.5, content=False)
        live.flush(10)
        started = time.perf_counter()
        asked()
        answering = time.perf_counter() - started
        assert answering < 2.5  # the receiver takes 3 s a request: the answer did not wait
        waited = time.perf_counter()
        live.flush()  # what a process does at exit: at most otlp_timeout
        assert time.perf_counter() - waited < 1.5


def test_export_to_a_receiver_that_is_down_or_refuses_is_a_one_line_error(
        env: dict[str, str]) -> None:
    asked()
    down = runner.invoke(app, ["traces", "export", "--otlp", closed_url()])
    assert down.exit_code == ExitCode.EXPORT_FAILED
    assert "cannot reach the OTLP receiver" in down.stderr and "0 of 1 records" in down.stderr
    with Receiver(status=500) as receiver:
        refused = runner.invoke(app, ["traces", "export", "--otlp", receiver.url])
    assert refused.exit_code == ExitCode.EXPORT_FAILED and "did not take the spans" in refused.stderr
    bad = runner.invoke(app, ["traces", "export", "--otlp", "ftp://x"])
    assert bad.exit_code == ExitCode.USAGE and "--otlp" in bad.stderr
    assert "Traceback" not in down.output + refused.output + bad.output


def test_a_failed_request_is_a_trace_with_an_error_status(
        cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGCLI_STORE", str(tmp_path / "no-store"))
    result = runner.invoke(app, ["ask", QUESTION, "--mode", "extractive"])
    assert result.exit_code == ExitCode.STORE_MISSING
    (failed,) = AuditLog(tmp_path / "audit.sqlite3").recent(None)
    assert failed["status"] == "failed"
    root = telemetry.spans(failed)[0]
    assert root.name == "ask" and root.attributes["ragcli.exit_code"] == ExitCode.STORE_MISSING
    assert root.error == failed["error"]["type"]  # its message only with otlp_content
    with Receiver() as receiver:
        assert runner.invoke(app, ["traces", "export", "--otlp", receiver.url]).exit_code == 0
    (span,) = receiver.spans
    assert span["status"] == 2  # STATUS_CODE_ERROR


def test_trace_and_span_ids_are_stable_and_made_from_the_request_id() -> None:
    request_id = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    assert telemetry.trace_id(request_id) == int(request_id.replace("-", ""), 16)
    assert telemetry.span_id(request_id, "ask") == telemetry.span_id(request_id, "ask")
    assert telemetry.span_id(request_id, "ask") != telemetry.span_id(request_id, "retrieve")
    assert telemetry.traces_url("http://h:6006/") == "http://h:6006/v1/traces"
    assert telemetry.traces_url("http://h:4318/v1/traces") == "http://h:4318/v1/traces"
