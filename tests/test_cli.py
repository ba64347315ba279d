"""The real CLI (CliRunner) over the real store, with the fast hash embedder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import HANDBOOK
from ragcli.cli.app import app
from ragcli.errors import ExitCode

runner = CliRunner()


@pytest.fixture(autouse=True)
def fast_embedder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAGCLI_EMBEDDER", "test-hash")
    monkeypatch.setenv("RAGCLI_STORE", str(tmp_path / "store"))


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def assert_one_line_error(result, code: ExitCode, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ragcli: error: ") and fragment in lines[0]
    assert "Traceback" not in result.output


def test_help_lists_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("ingest", "ask", "status"):
        assert command in result.stdout


def test_help_imports_nothing_heavy() -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ragcli", "--help"],
                          capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    heavy = {"torch", "lancedb", "llama_cpp", "sentence_transformers", "transformers", "ragas",
             "pyarrow", "numpy", "onnxruntime", "opentelemetry", "opentelemetry.sdk"}
    assert not heavy & imported


def test_ingest_then_status_json() -> None:
    result = invoke("ingest", str(HANDBOOK))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ingested 49 documents (49 added")
    result = invoke("status", "--json")
    data = json.loads(result.stdout)
    assert data["documents"] == 49 and data["chunks"] > 49
    assert data["embedder"] == "test-hash-256"
    again = json.loads(invoke("ingest", str(HANDBOOK), "--json").stdout)
    assert again["unchanged"] == 49 and again["chunks_written"] == 0
    assert again["version"] == data["version"]
    # the model, by the file hash every audit record names it by
    from ragcli.paths import file_sha256
    from ragcli.runtimes.generation import default_model_path

    assert data["model"]["sha256"] == file_sha256(default_model_path())
    assert "large" not in data


def test_status_names_a_missing_model_and_the_large_route(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert invoke("ingest", str(HANDBOOK)).exit_code == 0
    monkeypatch.setenv("RAGCLI_MODEL", str(tmp_path / "gone.gguf"))
    monkeypatch.setenv("RAGCLI_ROUTE", "small-first")
    monkeypatch.setenv("RAGCLI_LARGE_URL", "http://127.0.0.1:9/v1")
    result = invoke("status", "--json")
    assert result.exit_code == 0, result.output  # the store is still reported
    data = json.loads(result.stdout)
    assert "model file not found" in data["model"]["error"] and "sha256" not in data["model"]
    assert data["large"] == {"route": "small-first", "url": "http://127.0.0.1:9/v1",
                             "model": "default"}
    shown = invoke("status")
    assert "model file not found" in shown.stdout and "small-first" in shown.stdout


def test_ingest_missing_path() -> None:
    assert_one_line_error(invoke("ingest", "no/such/dir"), ExitCode.INPUT, "no such file")


def test_ingest_skips_bad_file_and_exits_partial(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "good.md").write_text("# Good\n\nFine text.\n")
    (corpus / "bad.md").write_bytes(b"\xff\xfe broken")
    result = invoke("ingest", str(corpus))
    assert result.exit_code == ExitCode.PARTIAL
    assert "skipped" in result.stderr and "bad.md" in result.stderr
    assert "1 added" in result.stdout


def test_ask_without_store() -> None:
    assert_one_line_error(invoke("ask", "anything"), ExitCode.STORE_MISSING, "no ragcli store")


def test_ask_with_bad_model_path(tmp_path: Path) -> None:
    invoke("ingest", str(HANDBOOK))
    fake = tmp_path / "model.gguf"
    fake.write_text("not a model")
    assert_one_line_error(invoke("ask", "parental leave", "--model", str(fake)), ExitCode.MODEL,
                          "not a GGUF model file")
    assert_one_line_error(invoke("ask", "parental leave", "--model", str(tmp_path / "none.gguf")),
                          ExitCode.MODEL, "model file not found")


def test_ask_empty_question() -> None:
    invoke("ingest", str(HANDBOOK))
    assert_one_line_error(invoke("ask", "  "), ExitCode.USAGE, "question is empty")


def test_bad_config(tmp_path: Path) -> None:
    (tmp_path / "ragcli.toml").write_text("top_k = 'x'\n")
    assert_one_line_error(invoke("status"), ExitCode.CONFIG, "top_k must be an integer")


def test_store_with_other_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    invoke("ingest", str(HANDBOOK))
    monkeypatch.setenv("RAGCLI_EMBEDDER", "minilm")
    result = invoke("ask", "parental leave")
    assert_one_line_error(result, ExitCode.STORE, "holds vectors of embedder 'test-hash-256'")


def test_unknown_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGCLI_EMBEDDER", "nope")
    assert_one_line_error(invoke("ingest", str(HANDBOOK)), ExitCode.MODEL, "unknown embedder")


def test_refusal_json_is_schema_valid() -> None:
    import jsonschema

    from ragcli.schema import answer_schema

    invoke("ingest", str(HANDBOOK))
    result = invoke("ask", "zebra xylophone quokka", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    jsonschema.validate(data, answer_schema())
    assert data["refused"] is True and data["citations"] == []
