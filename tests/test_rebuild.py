"""A rebuild keeps history: replay after `reindex --rebuild` is identical or says exit 13 naming
the rebuild, never a comparison with another table; other corpora are never dropped silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import HANDBOOK
from fakes import HashEmbedder
from ragcli.cli.app import app
from ragcli.errors import ExitCode
from ragcli.runtimes.embedder import EMBEDDERS
from ragcli.store.store import Store

runner = CliRunner()
QUESTION = "How many weeks of paid parental leave do non-birthing parents get?"


class OtherHash(HashEmbedder):
    id = "test-hash-256-b"  # another embedder of the same dimension


class SmallHash(HashEmbedder):
    id, dim = "test-hash-128", 128

    def embed(self, texts):  # type: ignore[no-untyped-def]
        vectors = super().embed(texts)[:, :128]
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


@pytest.fixture
def corpora(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setitem(EMBEDDERS, "test-hash-b", OtherHash)
    monkeypatch.setitem(EMBEDDERS, "test-hash-128", SmallHash)
    monkeypatch.setenv("RAGCLI_EMBEDDER", "test-hash")
    monkeypatch.setenv("RAGCLI_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("RAGCLI_AUDIT", str(tmp_path / "audit.sqlite3"))
    monkeypatch.setenv("RAGCLI_MIN_CONFIDENCE", "0.1")
    handbook = tmp_path / "handbook"
    shutil.copytree(HANDBOOK, handbook)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "lunch.md").write_text("# Lunch\n\nLunch is served at noon in the atrium.\n")
    for corpus in (handbook, other):
        assert runner.invoke(app, ["ingest", str(corpus)]).exit_code == 0
    return handbook, other


def ask() -> str:
    result = runner.invoke(app, ["ask", QUESTION, "--mode", "extractive", "--json"])
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["request_id"])


def replay(request_id: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    result = runner.invoke(app, ["replay", request_id, "--json"])
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def test_replay_after_a_rebuild_is_identical_and_other_corpora_survive(
        corpora: tuple[Path, Path], tmp_path: Path) -> None:
    handbook, _ = corpora
    request_id = ask()
    before = Store.open(tmp_path / "store")
    version, documents = before.version, len(before.documents())
    rebuilt = runner.invoke(app, ["reindex", "--rebuild", str(handbook), "--json"])
    assert rebuilt.exit_code == 0, rebuilt.output
    report = json.loads(rebuilt.stdout)
    assert report["rebuilt"] and report["chunks_embedded"] == report["chunks_written"]
    after = Store.open(tmp_path / "store")
    assert after.version > version and len(after.documents()) == documents  # numbering goes on
    assert "notes:lunch.md" in after.documents()  # the corpus not given was embedded again too
    assert after.manifest.rebuilds[-1]["reason"] == "--rebuild"
    assert after.manifest.rebuilds[-1]["kind"] == "in-place"
    code, report, _ = replay(request_id)
    assert code == 0 and report["identical"] and report["recorded_version"] < after.version


def test_an_embedder_change_of_the_same_dimension_keeps_old_requests_replayable(
        corpora: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    request_id = ask()
    monkeypatch.setenv("RAGCLI_EMBEDDER", "test-hash-b")
    assert runner.invoke(app, ["reindex", *map(str, corpora)]).exit_code == 0
    store = Store.open(tmp_path / "store")
    assert store.manifest.embedder == "test-hash-256-b"
    assert store.manifest.rebuilds[-1]["reason"] == "embedder test-hash-256 -> test-hash-256-b"
    code, report, _ = replay(request_id)  # the recorded embedder, at the recorded version
    assert code == 0 and report["identical"]


def test_a_new_dimension_starts_a_new_table_and_replay_names_the_rebuild(
        corpora: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    request_id = ask()
    monkeypatch.setenv("RAGCLI_EMBEDDER", "test-hash-128")
    assert runner.invoke(app, ["reindex", *map(str, corpora)]).exit_code == 0
    for _ in range(3):  # the new table reaches the recorded version number again
        assert runner.invoke(app, ["reindex", "--rebuild", *map(str, corpora)]).exit_code == 0
    code, _, err = replay(request_id)
    assert code == ExitCode.VERSION_GONE
    assert "was rebuilt after this request (embedder test-hash-256 -> test-hash-128" in err


def test_records_from_before_generations_are_judged_by_time(
        corpora: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sqlite3

    request_id = ask()
    with sqlite3.connect(tmp_path / "audit.sqlite3") as connection:  # as an older ragcli wrote it
        record = json.loads(connection.execute("SELECT record FROM traces").fetchone()[0])
        del record["index_generation"]
        connection.execute("UPDATE traces SET record = ?, seq = NULL, prev = NULL, link = NULL",
                           (json.dumps(record),))  # nor did it seal records
        connection.execute("DELETE FROM chain_head")
    monkeypatch.setenv("RAGCLI_EMBEDDER", "test-hash-128")
    assert runner.invoke(app, ["reindex", *map(str, corpora)]).exit_code == 0
    code, _, err = replay(request_id)
    assert code == ExitCode.VERSION_GONE and "was rebuilt after this request" in err


def test_a_rebuild_that_would_lose_a_corpus_refuses(corpora: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    handbook, notes = corpora
    (notes / "lunch.md").unlink()  # a corpus whose files are gone cannot be embedded again
    version = Store.open(tmp_path / "store").version
    refused = runner.invoke(app, ["reindex", "--rebuild", str(handbook)])
    assert refused.exit_code == ExitCode.INPUT
    assert f"their files are gone: {notes / 'lunch.md'}" in refused.stderr
    assert Store.open(tmp_path / "store").version == version  # nothing dropped
