"""ragcli's traces in a real collector: Arize Phoenix, started by the test on 127.0.0.1, fed live
while answering and by ``traces export --otlp``, then read back through Phoenix's own REST API
(span kinds, the chunk IDs and scores of the audit record). Marked ``real``.

Phoenix is large (~600 MB with its dependencies) and pins its own versions of libraries ragcli
uses, so it lives in a venv of its own: scripts/test makes ``.ragcli/phoenix-venv`` from the
exact pins in ``scripts/phoenix-requirements.txt`` (``RAGCLI_PHOENIX`` names another
``phoenix`` executable); without it the test is skipped, saying why."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from otlp_receiver import start_phoenix
from ragcli.audit.trace import AuditLog
from ragcli.cli import ask as ask_command
from ragcli.cli.app import app

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[1]
PHOENIX = Path(os.environ.get("RAGCLI_PHOENIX") or ROOT / ".ragcli" / "phoenix-venv" / "bin" /
               "phoenix")
runner = CliRunner()
QUESTION = "How many weeks of paid parental leave do non-birthing parents get?"


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - 127.0.0.1
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not PHOENIX.is_file():
        pytest.skip(f"Arize Phoenix is not installed at {PHOENIX} (scripts/test installs it)")
    try:
        proc, url = start_phoenix(PHOENIX, tmp_path_factory.mktemp("phoenix"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def spans_of(url: str, trace_id: str) -> list[dict]:
    """Every span Phoenix holds for one trace (its REST API, project ``default``)."""
    deadline = time.monotonic() + 60
    while True:  # Phoenix ingests in the background: wait for the whole trace
        data = get(f"{url}/v1/projects/default/spans?limit=1000")["data"]
        spans = [s for s in data if s["context"]["trace_id"] == trace_id]
        if len(spans) >= 5 or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def test_phoenix_shows_a_request_as_the_audit_record_has_it(
        phoenix: str, handbook_store: Path, cli_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from fakes import EchoGenerator

    monkeypatch.setattr(ask_command, "gguf_generator", lambda settings: EchoGenerator())
    monkeypatch.setenv("RAGCLI_OTLP_ENDPOINT", phoenix)  # live
    asked = runner.invoke(app, ["ask", QUESTION, "--json"])
    assert asked.exit_code == 0, asked.output
    request_id = json.loads(asked.stdout)["request_id"]
    record = AuditLog(tmp_path / "audit.sqlite3").require(request_id)
    spans = {s["name"]: s for s in spans_of(phoenix, request_id.replace("-", ""))}
    assert {"ask", "retrieve", "retrieve.vector", "retrieve.fts", "embed", "span"} <= set(spans)
    kinds = {name: s["span_kind"] for name, s in spans.items()}
    assert kinds["ask"] == "CHAIN" and kinds["retrieve"] == "RETRIEVER"
    assert kinds["embed"] == "EMBEDDING" and kinds["span"] == "LLM"
    retrieved = _attributes(spans["retrieve"])
    for i, hit in enumerate(record["retrieved"]):
        assert retrieved[f"retrieval.documents.{i}.document.id"] == hit["chunk_id"]
        assert retrieved[f"retrieval.documents.{i}.document.score"] == pytest.approx(hit["score"])
    root = _attributes(spans["ask"])
    assert root["ragcli.request_id"] == request_id and "input.value" not in root

    # after the fact: a second request, not exported live, sent by traces export --otlp
    monkeypatch.delenv("RAGCLI_OTLP_ENDPOINT")
    later = json.loads(runner.invoke(app, ["ask", QUESTION, "--json", "--mode",
                                           "extractive"]).stdout)["request_id"]
    exported = runner.invoke(app, ["traces", "export", "--otlp", phoenix])
    assert exported.exit_code == 0, exported.output
    names = {s["name"] for s in spans_of(phoenix, later.replace("-", ""))}
    assert {"ask", "retrieve", "retrieve.vector", "retrieve.fts"} <= names


def _attributes(span: dict) -> dict:
    """Phoenix's span attributes, flattened to OpenInference's dotted names."""
    out: dict = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, inner in enumerate(value):
                walk(f"{prefix}.{i}", inner)
        else:
            out[prefix] = value

    walk("", span.get("attributes") or {})
    return out
