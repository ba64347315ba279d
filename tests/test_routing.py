"""Routing between the local model and an OpenAI-compatible server (docs/routing.md).

Fast tests: the real client (ragcli/runtimes/remote.py) against a scripted server on 127.0.0.1
(tests/openai_stub.py), the store real, embedder and small model fakes. Real tests (marked
``real``): llama-cpp-python's own OpenAI-compatible server serving the shipped GGUF as the
"large" model, started, stalled (SIGSTOP), killed mid-answer and given a wrong key. No test
reaches beyond the loopback interface."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from openai_stub import Stub
from typer.testing import CliRunner

from conftest import HANDBOOK
from fakes import EchoGenerator, HashEmbedder
from otlp_receiver import free_port, start_server
from ragcli.answer.answering import Answerer
from ragcli.answer.choosing import SERVED_SPAN_TOKENS
from ragcli.audit.trace import AuditLog, daily_stats
from ragcli.cli.app import app
from ragcli.errors import (
    BackendInvalidError,
    BackendRefusedError,
    BackendUnavailableError,
    ConfigError,
    ExitCode,
)
from ragcli.runtimes.remote import Endpoint, OpenAIGenerator
from ragcli.settings import Settings, load_settings

QUESTION = "How many weeks of parental leave?"
KEY = "sk-test-0123456789"


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()


@pytest.fixture
def settings(tmp_path: Path, handbook_store: Path, stub: Stub) -> Settings:
    return Settings(store=tmp_path / "store", audit=tmp_path / "audit.sqlite3",
                    min_confidence=0.3, mode="generative", large_url=stub.url,
                    large_model="big", large_timeout=2.0, large_retries=1,
                    usd_per_1k_prompt=0.5, usd_per_1k_completion=1.5)


def test_route_large_answers_through_the_server_and_records_it(
        settings: Settings, stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGCLI_LARGE_API_KEY", KEY)
    small = EchoGenerator()
    answerer = Answerer(replace(settings, route="large"), HashEmbedder(), lambda: small)
    streamed: list[str] = []
    result = answerer.ask(QUESTION, user="ana", groups=[], on_token=streamed.append)
    assert not result.refused and "[1]" in result.answer and small.prompts == []  # no local model
    assert "".join(streamed).split() == stub.text_for(stub.requests[0]["body"]).split()
    request = stub.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["body"]["model"] == "big" and request["body"]["stream"] is True
    record = AuditLog(settings.audit).get(result.request_id)
    assert record is not None and record["status"] == "answered"
    model = record["model"]
    assert model["backend"] == "openai" and model["endpoint"] == stub.url
    assert model["served_model"] == "stub-large" and model["response_id"] == "stub-1"
    assert model["sampling"]["temperature"] == 0.0 and model["api_key_set"] is True
    assert model["attempts"] == 1
    # the exact request is the record's prompt: the messages sent, as JSON
    assert json.loads(record["prompt"]["text"]) == request["body"]["messages"]
    usage = record["usage"]["large"]
    assert usage == {"prompt_tokens": 123, "completion_tokens": len(streamed),
                     "source": "server"}
    cost = record["cost"]
    assert cost["tokens"] == {"prompt": 123, "completion": len(streamed)}
    assert cost["usd"] == pytest.approx((123 * 0.5 + len(streamed) * 1.5) / 1000, abs=1e-6)
    assert cost["cpu_s"] > 0 and result.cost == cost
    assert record["route"] == {"policy": "large", "taken": "large", "escalated": False}
    assert "large_generation_first_token" in record["timings_ms"]
    # the key is never written anywhere
    assert KEY.encode() not in Path(settings.audit).read_bytes()
    assert KEY not in json.dumps(record)


@pytest.mark.parametrize(("behaviour", "error", "words"), [
    ("down", BackendUnavailableError, "connection refused (2 attempts)"),
    ("slow", BackendUnavailableError, "no response within 0.3 s"),
    ("cut", BackendUnavailableError, "ended the stream before the answer finished"),
    ("503", BackendUnavailableError, "HTTP 503"),
    ("garbage", BackendInvalidError, "not JSON"),
    ("not-json", BackendInvalidError, "not a JSON object"),
    ("401", BackendRefusedError, "HTTP 401"),
    ("400", BackendRefusedError, "HTTP 400 stub says 400"),
])
def test_each_server_failure_is_one_error_with_its_code_and_a_record(
        settings: Settings, stub: Stub, behaviour: str, error: type, words: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1" if behaviour == "down" else stub.url
    stub.behaviour = behaviour
    stub.stall_s = 1.0
    settings = replace(settings, route="large", large_url=url, large_timeout=0.3)
    answerer = Answerer(settings, HashEmbedder(), lambda: EchoGenerator())
    with pytest.raises(error) as caught:
        answerer.ask(QUESTION, user="ana", groups=[])
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert KEY not in str(caught.value)
    if behaviour == "503":  # retried: large_retries = 1
        assert len(stub.requests) == 2
    elif behaviour not in ("down", "slow"):
        assert len(stub.requests) == 1  # a refusal or a bad answer is not retried
    (record,) = AuditLog(settings.audit).recent(None)
    assert record["status"] == "failed"
    assert record["error"]["exit_code"] == int(error.exit_code)
    assert record["prompt"]["passages"], "the request's prompt is kept: nothing is lost"
    assert record["model"]["backend"] == "openai"


def test_a_server_quoting_the_key_back_never_gets_it_printed_or_recorded(
        settings: Settings, stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGCLI_LARGE_API_KEY", KEY)
    stub.behaviour = "401"
    answerer = Answerer(replace(settings, route="large"), HashEmbedder(), EchoGenerator)
    with pytest.raises(BackendRefusedError) as caught:
        answerer.ask(QUESTION, user="ana", groups=[])
    assert KEY in stub.requests[0]["headers"]["Authorization"]  # it was sent, and quoted back
    assert "[the API key]" in str(caught.value) and KEY not in str(caught.value)
    assert KEY.encode() not in Path(settings.audit).read_bytes()


def test_a_busy_server_is_retried_and_the_record_counts_the_attempts(
        settings: Settings, stub: Stub) -> None:
    stub.behaviour = "503-once"
    answer = Answerer(replace(settings, route="large"), HashEmbedder(), EchoGenerator).ask(
        QUESTION, user="ana", groups=[])
    assert not answer.refused and len(stub.requests) == 2
    assert answer.trace is not None and answer.trace["model"]["attempts"] == 2


def test_the_cli_prints_one_line_and_the_documented_exit_code(
        settings: Settings, stub: Stub, cli_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGCLI_LARGE_URL", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("RAGCLI_LARGE_RETRIES", "0")
    runner = CliRunner()
    result = runner.invoke(app, ["ask", QUESTION, "--model", "large", "--json"])
    assert result.exit_code == ExitCode.BACKEND_UNAVAILABLE == 19
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "connection refused" in result.stderr
    assert "Traceback" not in result.output
    monkeypatch.setenv("RAGCLI_LARGE_URL", stub.url)
    result = runner.invoke(app, ["ask", QUESTION, "--model", "large", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["route"]["taken"] == "large" and data["cost"]["tokens"]["prompt"] == 123
    stub.behaviour = "401"
    result = runner.invoke(app, ["ask", QUESTION, "--route", "large"])
    assert result.exit_code == ExitCode.BACKEND_REFUSED == 20
    assert "RAGCLI_LARGE_API_KEY" in result.stderr  # the hint names the variable, not a key
    result = runner.invoke(app, ["ask", QUESTION, "--model", "large", "--route", "local"])
    assert result.exit_code == ExitCode.USAGE
    monkeypatch.delenv("RAGCLI_LARGE_URL")
    result = runner.invoke(app, ["ask", QUESTION, "--model", "large"])
    assert result.exit_code == ExitCode.CONFIG and "large_url" in result.stderr


def test_small_first_escalates_only_what_the_small_model_fails(
        settings: Settings, stub: Stub) -> None:
    good_small = EchoGenerator()  # cites a sentence of passage [1]: verified
    routed = replace(settings, route="small-first")
    answer = Answerer(routed, HashEmbedder(), lambda: good_small).ask(QUESTION, user="a", groups=[])
    assert answer.route == {"policy": "small-first", "taken": "small", "escalated": False,
                            "reason": None}
    assert stub.requests == []
    assert answer.cost["by_model"]["small"]["source"] == "counted"
    # a small answer that no passage supports is refused by the checks, then escalated
    bad_small = EchoGenerator(reply="The moon is made of cheese [1].")
    answer = Answerer(routed, HashEmbedder(), lambda: bad_small).ask(QUESTION, user="a", groups=[])
    assert answer.route["escalated"] and answer.route["taken"] == "large"
    assert answer.route["reason"] == "small_unsupported_answer"
    assert not answer.refused and "cheese" not in answer.answer and len(stub.requests) == 1
    record = AuditLog(settings.audit).get(answer.request_id)
    assert record is not None
    small, large = record["attempts"]
    assert small["route"] == "small" and small["refused"] and "cheese" in small["output"]["raw"]
    assert small["model"]["sha256"] == "0" * 64
    assert large["route"] == "large" and large["status"] == "answered"
    assert record["answer"] == large["answer"] and record["model"]["backend"] == "openai"
    assert set(record["usage"]) == {"small", "large"}
    assert record["cost"]["tokens"]["completion"] == \
        record["usage"]["small"]["completion_tokens"] + record["usage"]["large"]["completion_tokens"]
    # a refusal for lack of evidence is never escalated: no model may answer without evidence
    answer = Answerer(routed, HashEmbedder(), lambda: bad_small).ask(
        "zebra xylophone quokka", user="a", groups=[])
    assert answer.refused and not answer.route["escalated"] if answer.route else answer.refused
    assert len(stub.requests) == 1


def test_small_first_escalates_low_confidence_band_and_keeps_a_verified_small_answer(
        settings: Settings, stub: Stub) -> None:
    routed = replace(settings, route="small-first", escalate_below=1.5)  # every answer
    stub.reply = "Nothing in these passages says that [1]."  # the large model's claim fails
    answer = Answerer(routed, HashEmbedder(), lambda: EchoGenerator()).ask(
        QUESTION, user="a", groups=[])
    assert answer.route["reason"] == "confidence_below_escalate_below"
    # the large answer was refused by the checks: the verified small one is shown
    assert answer.route["taken"] == "small" and not answer.refused
    record = AuditLog(settings.audit).get(answer.request_id)
    assert record is not None and [a["route"] for a in record["attempts"]] == ["small", "large"]
    assert record["attempts"][1]["refused"] and record["answer"] == answer.answer


def test_a_served_answer_repaired_by_the_checks_keeps_its_request_in_the_record(
        settings: Settings, stub: Stub) -> None:
    """Mode generative, small-first: the served model's answer fails its claim check (6 weeks is
    not in the passage) and is repaired with the extract, by the rules: the record keeps the
    request that was sent."""
    routed = replace(settings, route="small-first", escalate_below=1.5)
    stub.reply = "Non-birthing parents receive 6 weeks of fully paid leave. [1]"
    answer = Answerer(routed, HashEmbedder(), lambda: EchoGenerator()).ask(
        QUESTION, user="a", groups=[])
    assert answer.route is not None and answer.route["taken"] == "large"
    assert answer.verification is not None and answer.verification.outcome == "repaired"
    assert " 6 weeks" not in answer.answer and "16 weeks" in answer.answer
    record = AuditLog(settings.audit).get(answer.request_id)
    assert record is not None
    sent = json.loads(record["attempts"][1]["prompt"]["text"])
    assert sent == stub.requests[0]["body"]["messages"]
    assert record["model"]["backend"] == "openai" and record["prompt"]["text"] == \
        record["attempts"][1]["prompt"]["text"]


def test_in_mode_auto_the_served_model_picks_the_span_the_rules_quote(
        settings: Settings, stub: Stub) -> None:
    """Mode auto, small-first: escalated, the served model is asked the small model's span
    question (it cannot score spans through the API); the candidate span of the extract's sentence
    that best overlaps what it wrote is the short answer, and what it wrote is recorded, never
    shown. Route large does the same without the small model."""
    routed = replace(settings, route="small-first", mode="auto", escalate_below=1.5)
    stub.reply = "Fully paid leave."  # as written: capital, stop (the rules would say 20 weeks)
    small = EchoGenerator()
    answer = Answerer(routed, HashEmbedder(), lambda: small).ask(QUESTION, user="a", groups=[])
    assert answer.route is not None and answer.route["taken"] == "large"
    assert answer.short_answer == "fully paid leave" and "Fully" not in answer.answer
    assert answer.verification is not None and answer.verification.outcome == "verified"
    record = AuditLog(settings.audit).get(answer.request_id)
    assert record is not None
    small_try, large_try = record["attempts"]
    assert small_try["span_choice"]["chosen"] != "fully paid leave"
    assert large_try["prompt"]["purpose"] == "span choice"
    assert json.loads(large_try["prompt"]["text"]) == stub.requests[0]["body"]["messages"]
    assert stub.requests[0]["body"]["max_tokens"] == SERVED_SPAN_TOKENS
    assert large_try["output"]["raw"] == "Fully paid leave."
    assert large_try["span_choice"]["by"] == "served answer overlap"
    assert record["model"]["backend"] == "openai" and record["usage"]["large"]["source"] == "server"
    # route large: the same question to the server, no small model built
    only = replace(routed, route="large")
    answer = Answerer(only, HashEmbedder(), _no_small).ask(QUESTION, user="a", groups=[])
    assert answer.short_answer == "fully paid leave" and answer.route["taken"] == "large"
    # an answer sharing no word with any span: the rules' choice, still a span of the quote
    stub.reply = "I cannot tell."
    answer = Answerer(only, HashEmbedder(), _no_small).ask(QUESTION, user="a", groups=[])
    assert not answer.refused and answer.short_answer == "20 weeks"  # the rules' best span


def _no_small() -> EchoGenerator:
    raise AssertionError("route large must not build the small model")


def test_small_first_keeps_the_small_result_when_the_server_is_down(settings: Settings) -> None:
    routed = replace(settings, route="small-first", large_retries=0,
                     large_url=f"http://127.0.0.1:{free_port()}/v1")
    bad_small = EchoGenerator(reply="The moon is made of cheese [1].")
    answer = Answerer(routed, HashEmbedder(), lambda: bad_small).ask(QUESTION, user="a", groups=[])
    assert answer.refused and answer.route["escalated"] and answer.route["taken"] == "small"
    assert "connection refused" in answer.route["error"]
    record = AuditLog(settings.audit).get(answer.request_id)
    assert record is not None and record["status"] == "refused"
    assert record["attempts"][1]["error"]["exit_code"] == ExitCode.BACKEND_UNAVAILABLE


def test_redacted_records_hide_every_attempt(settings: Settings, stub: Stub) -> None:
    routed = replace(settings, route="small-first", redact_audit=True)
    bad_small = EchoGenerator(reply="The moon is made of cheese [1].")
    answer = Answerer(routed, HashEmbedder(), lambda: bad_small).ask(QUESTION, user="a", groups=[])
    raw = Path(settings.audit).read_bytes()
    assert b"cheese" not in raw and answer.answer.encode() not in raw
    assert QUESTION.encode() not in raw  # (document titles and chunk ids are kept, as always)
    assert answer.route is not None and answer.route["taken"] == "large"


def test_settings_keep_secrets_out_of_the_url(tmp_path: Path) -> None:
    for url in ("http://user:pw@127.0.0.1:1/v1", "http://127.0.0.1:1/v1?key=x", "ftp://h/v1",
                "127.0.0.1:8080"):
        with pytest.raises(ConfigError):
            load_settings(environ={"RAGCLI_LARGE_URL": url}, cwd=tmp_path)
    with pytest.raises(ConfigError):
        load_settings(environ={"RAGCLI_LARGE_API_KEY_ENV": "sk-live-123"}, cwd=tmp_path)
    with pytest.raises(ConfigError):
        load_settings(environ={"RAGCLI_ROUTE": "cheapest"}, cwd=tmp_path)
    ok = load_settings(environ={"RAGCLI_LARGE_URL": "http://127.0.0.1:8080/v1",
                                "RAGCLI_ROUTE": "small-first"}, cwd=tmp_path)
    assert ok.route == "small-first" and ok.large_url == "http://127.0.0.1:8080/v1"


def test_traces_stats_summarises_each_day() -> None:
    def rec(day: str, status: str, total: float, **extra: object) -> dict[str, object]:
        return {"created_at": f"{day}T10:00:00+00:00", "status": status,
                "timings_ms": {"total": total}, **extra}
    cost = {"cpu_s": 0.5, "usd": 0.001, "tokens": {"prompt": 100, "completion": 10}}
    rows = daily_stats([
        rec("2026-11-22", "answered", 100.0, cost=cost),
        rec("2026-11-22", "refused", 300.0, cost=cost,
            route={"escalated": True, "taken": "large"}),
        rec("2026-11-22", "failed", 200.0),
        rec("2026-11-23", "started", 0.0),
    ])
    first, second = rows
    assert first["day"] == "2026-11-22" and first["requests"] == 3
    assert (first["answered"], first["refused"], first["failed"]) == (1, 1, 1)
    assert first["escalated"] == 1 and first["answered_by_large"] == 1
    assert first["prompt_tokens"] == 200 and first["completion_tokens"] == 20
    assert first["cpu_s"] == 1.0 and first["usd"] == 0.002
    assert first["latency_p50_ms"] == 200.0 and first["latency_p95_ms"] == 300.0
    assert second["requests"] == 1 and second["interrupted"] == 1
    assert second["latency_p50_ms"] == 0.0  # an unfinished request has no latency


def test_traces_stats_cli(settings: Settings, stub: Stub, cli_env: dict[str, str],
                          tmp_path: Path) -> None:
    runner = CliRunner()
    for _ in range(2):
        assert runner.invoke(app, ["ask", QUESTION, "--mode", "extractive"]).exit_code == 0
    result = runner.invoke(app, ["traces", "stats", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["requests"] == 2 and row["answered"] == 2 and row["latency_p50_ms"] > 0
    result = runner.invoke(app, ["traces", "stats"])
    assert result.exit_code == 0 and "asked" in result.stdout and row["day"] in result.stdout
    result = runner.invoke(app, ["traces", "stats", "--since", "yesterday"])
    assert result.exit_code == ExitCode.USAGE


# ---- the real server: llama-cpp-python's OpenAI-compatible server on 127.0.0.1 ---------------

@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """``python -m llama_cpp.server`` serving the shipped SmolLM2 GGUF (the "large" model here:
    any GGUF serves), with an API key; stopped at the end of the module."""
    import llama_cpp.server  # noqa: F401 - the dev extra installs it; missing is a failure, not a skip

    from ragcli.runtimes.generation import default_model_path

    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()),
               "--host", "127.0.0.1", "--port", str(port), "--model_alias", "served-smollm2",
               "--n_ctx", "2048", "--api_key", KEY, "--n_threads", "1"]
    url = f"http://127.0.0.1:{port}/v1"
    try:
        process = start_server(command, f"{url}/models", tmp_path_factory.mktemp("server") /
                               "server.log", timeout=120)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield {"url": url, "process": process}
    process.kill()
    process.wait()


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ragcli", *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


@pytest.mark.real
def test_real_server_answers_ask_json_and_fails_cleanly(
        real_server: dict[str, object], tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = {**os.environ, **cli_env, "RAGCLI_LARGE_URL": str(real_server["url"]),
           "RAGCLI_LARGE_MODEL": "served-smollm2", "RAGCLI_LARGE_API_KEY": KEY,
           "RAGCLI_USD_PER_1K_COMPLETION": "2.0", "RAGCLI_EMBEDDER": "minilm-onnx"}
    del env["RAGCLI_MIN_CONFIDENCE"]
    indexed = _run(["ingest", str(HANDBOOK)], env)  # the real embedder, as a user would
    assert indexed.returncode == 0, indexed.stderr
    done = _run(["ask", "How much is the daily meal allowance when travelling?", "--model", "large",
                 "--json"], env)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["route"]["taken"] == "large"
    record = AuditLog(Path(cli_env["RAGCLI_AUDIT"])).get(data["request_id"])
    assert record is not None
    assert record["model"]["backend"] == "openai"
    assert record["model"]["served_model"] == "served-smollm2"
    assert record["model"]["response_id"]
    completion = record["usage"]["large"]["completion_tokens"]
    assert completion > 0 and data["cost"]["tokens"]["completion"] == completion
    assert data["cost"]["usd"] == pytest.approx(completion * 2.0 / 1000, abs=1e-6)
    assert KEY.encode() not in Path(cli_env["RAGCLI_AUDIT"]).read_bytes()
    # a wrong key: refused, exit 20
    bad = _run(["ask", "How much is the meal allowance?", "--model", "large"],
               {**env, "RAGCLI_LARGE_API_KEY": "wrong"})
    assert bad.returncode == ExitCode.BACKEND_REFUSED, bad.stderr
    assert bad.stderr.count("\n") == 1 and "HTTP 401" in bad.stderr and "wrong" not in bad.stderr
    # replay re-asks the server and says it cannot verify the model
    replayed = _run(["replay", data["request_id"], "--json"], env)
    assert replayed.returncode == ExitCode.UNVERIFIABLE, replayed.stderr
    report = json.loads(replayed.stdout)
    assert report["outcome"] == "unverifiable" and not report["identical"]
    assert report["checks"]["retrieval"] and report["checks"]["prompt"]
    # stalled (SIGSTOP): no byte within large_timeout, after the retries; exit 19
    process = real_server["process"]
    assert isinstance(process, subprocess.Popen)
    os.kill(process.pid, signal.SIGSTOP)
    try:
        slow = _run(["ask", "How much is the meal allowance?", "--model", "large"],
                    {**env, "RAGCLI_LARGE_TIMEOUT": "1", "RAGCLI_LARGE_RETRIES": "1"})
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert slow.returncode == ExitCode.BACKEND_UNAVAILABLE, slow.stderr
    assert "no response within 1 s (2 attempts)" in slow.stderr
    failed = list(AuditLog(Path(cli_env["RAGCLI_AUDIT"])).recent(None, status="failed"))
    assert {r["error"]["exit_code"] for r in failed} == {ExitCode.BACKEND_REFUSED,
                                                         ExitCode.BACKEND_UNAVAILABLE}
    # the exact request was on disk before the server was asked (mode auto: the span question)
    assert all(r["prompt"]["purpose"] == "span choice" and r["prompt"]["text"] for r in failed)


@pytest.mark.real
def test_real_server_killed_mid_answer(real_server: dict[str, object]) -> None:
    """Last in this module: it kills the server. The stream breaks off after the first tokens;
    the client says so (exit 19), and never returns the partial text as an answer."""
    process = real_server["process"]
    assert isinstance(process, subprocess.Popen)
    generator = OpenAIGenerator(Endpoint(str(real_server["url"]), "served-smollm2",
                                         timeout_s=30, retries=0))
    os.environ["RAGCLI_LARGE_API_KEY"] = KEY
    try:
        prompt = generator.render([("user", "Count from 1 to 200, one number per line.")])
        seen: list[str] = []

        def kill_on_first_token(text: str) -> None:
            seen.append(text)
            if len(seen) == 1:
                process.kill()
                process.wait()

        with pytest.raises(BackendUnavailableError) as caught:
            generator.generate(prompt, max_tokens=400, temperature=0.0, seed=1,
                               on_token=kill_on_first_token)
    finally:
        del os.environ["RAGCLI_LARGE_API_KEY"]
    assert seen, "the server streamed before it was killed"
    message = str(caught.value)
    assert "ended the stream before the answer finished" in message or "broke off" in message


def test_calibrate_route_chooses_the_best_band_within_the_budget() -> None:
    """Three answerable cases: the small model is right on a (confidence 0.9), wrong on b (0.6),
    and fails its checks on c (0.7); the large model is right on all three at 0.01 USD each."""
    from ragcli.evaluate.calibration import calibrate_route
    from ragcli.evaluate.evaluation import CaseResult
    from ragcli.evaluate.goldens import Golden

    def case(name: str, answer: str, confidence: float, *, refused: bool = False,
             failed: str | None = None, usd: float = 0.0) -> CaseResult:
        golden = Golden(name, f"question {name}?", expected_answers=("right",))
        return CaseResult(golden, refused=refused, answer=answer, short_answer=answer,
                          confidence=confidence, failed_checks=failed, cost={"usd": usd})

    small = [case("a", "right", 0.9), case("b", "wrong", 0.6),
             case("c", "I don't know.", 0.7, refused=True, failed="small_unsupported_answer")]
    large = [case(n, "right", c, usd=0.01) for n, c in (("a", 0.9), ("b", 0.6), ("c", 0.7))]
    report = calibrate_route(small, large)
    by_edge = {r["escalate_below"]: r for r in report["sweep"]}
    assert by_edge[0.0]["escalated_share"] == pytest.approx(1 / 3)  # c failed its checks
    assert by_edge[0.0]["answered_right"] == 2 and by_edge[0.0]["usd_per_query"] == \
        pytest.approx(0.01 / 3)
    best = report["best"]  # escalating b too (edge above 0.6) makes all three right
    assert best["answered_right"] == 3 and best["escalated_share"] == pytest.approx(2 / 3)
    assert 0.6 < best["escalate_below"] <= 0.7 + 1e-6  # the cheapest edge that does it
    cheap = calibrate_route(small, large, budget_usd=0.005)
    assert cheap["best"]["escalate_below"] == 0.0 and cheap["best"]["answered_right"] == 2
    assert calibrate_route(small, large, max_escalated=0.1)["best"] is None  # c must escalate


def test_calibrate_route_on_the_reader_score_when_the_reader_is_the_small_route() -> None:
    """The extractive reader as the small route: the band is on its span score
    (``min_reader_score``), whatever the retrieval confidence; a case the reader found no span
    for (score None) escalates at every edge."""
    from ragcli.evaluate.calibration import calibrate_route
    from ragcli.evaluate.evaluation import CaseResult
    from ragcli.evaluate.goldens import Golden

    def case(name: str, answer: str, score: float | None, *, refused: bool = False,
             failed: str | None = None, usd: float = 0.0) -> CaseResult:
        golden = Golden(name, f"question {name}?", expected_answers=("right",))
        return CaseResult(golden, refused=refused, answer=answer, short_answer=answer,
                          confidence=0.99, failed_checks=failed, cost={"usd": usd},
                          reader_score=score)

    small = [case("a", "right", 6.0), case("b", "wrong", 1.5),
             case("c", "I don't know.", None, refused=True, failed="small_low_reader_score")]
    large = [case(n, "right", None, usd=0.01) for n in "abc"]
    report = calibrate_route(small, large, knob="min_reader_score")
    assert report["knob"] == "min_reader_score"
    lowest = report["sweep"][0]
    assert lowest["min_reader_score"] == 1.5 and lowest["escalated_share"] == pytest.approx(1 / 3)
    best = report["best"]  # above b's 1.5, below a's 6.0: all three right, two escalated
    assert 1.5 < best["min_reader_score"] <= 6.0 and best["answered_right"] == 3
    assert best["token_f1"] == pytest.approx(1.0) and best["escalated_share"] == pytest.approx(2 / 3)
