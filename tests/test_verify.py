"""Damaged stores: `status --verify` finds what LanceDB reads back without complaint, names the
repair, and `reindex --rebuild` restores a store that verifies and answers as before."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import HANDBOOK
from ragcli.cli.app import app
from ragcli.errors import ExitCode
from ragcli.store.store import Store

runner = CliRunner()
QUESTION = "How many weeks of paid parental leave do non-birthing parents get?"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAGCLI_EMBEDDER", "test-hash")
    monkeypatch.setenv("RAGCLI_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("RAGCLI_MIN_CONFIDENCE", "0.3")
    corpus = tmp_path / "corpus"
    shutil.copytree(HANDBOOK, corpus)
    assert runner.invoke(app, ["ingest", str(corpus)]).exit_code == 0
    return tmp_path / "store"


def data_file(store: Path) -> Path:
    files = sorted((store / "lancedb" / "chunks.lance" / "data").glob("*.lance"))
    assert len(files) == 1  # the ingest wrote (and optimize compacted) one data file
    return files[0]


def chunk_ids(store: Path) -> dict[str, str]:
    return {r["chunk_id"]: r["chunk_hash"] for r in Store.open(store).scan(["chunk_id", "chunk_hash"])}


def verify() -> tuple[int, dict, str]:  # type: ignore[type-arg]
    result = runner.invoke(app, ["status", "--verify", "--json"])
    return result.exit_code, json.loads(result.stdout), result.stderr


def assert_damaged(kind: str | None = None) -> dict:  # type: ignore[type-arg]
    code, data, err = verify()
    assert code == ExitCode.STORE, (data, err)
    assert not data["ok"] and data["repair"].startswith("ragcli reindex --rebuild ")
    lines = [ln for ln in err.splitlines() if ln.startswith("ragcli: ")]
    assert len(lines) == 1 and "is damaged" in lines[0] and "reindex --rebuild" in lines[0]
    if kind:
        assert kind in data["problems"], data
    return data


def test_a_healthy_store_verifies(store: Path) -> None:
    code, data, _ = verify()
    assert code == 0 and data["ok"] and data["rows"] == len(chunk_ids(store)) and data["documents"] == 49
    result = runner.invoke(app, ["status", "--verify"])
    assert result.exit_code == 0 and "verified: " in result.stdout


@pytest.mark.parametrize("where", [0.1, 0.35, 0.6, 0.85, 0.97])
def test_overwritten_4kb_is_detected_and_rebuild_repairs(store: Path, where: float) -> None:
    before = chunk_ids(store)
    path = data_file(store)
    size = path.stat().st_size
    with path.open("r+b") as handle:  # what was measured: 4 KB of 0xFF in the middle of a file
        handle.seek(min(int(size * where), size - 4096))
        handle.write(b"\xff" * 4096)
    data = assert_damaged()
    assert set(data["problems"]) & {"non-finite vectors", "unreadable rows", "chunk hash mismatches",
                                    "search text not matching chunk text"}, data
    corpus = str(store.parent / "corpus")
    result = runner.invoke(app, ["reindex", "--rebuild", corpus])
    assert result.exit_code == 0, result.output
    assert verify()[0] == 0
    assert chunk_ids(store) == before


def test_nan_vector_fails_a_search_that_meets_it(store: Path) -> None:
    import pyarrow as pa

    table = Store.open(store).table()
    where = "doc_id = 'hr/parental-leave.md'"
    rows = table.search().where(where).limit(100).to_arrow()
    dim = Store.open(store).manifest.dim
    nan = pa.array([[math.nan] * dim] * rows.num_rows, type=rows.schema.field("vector").type)
    table.delete(where)
    table.to_lance().insert(rows.set_column(rows.schema.get_field_index("vector"), "vector", nan))
    assert_damaged("non-finite vectors")
    result = runner.invoke(app, ["ask", QUESTION, "--mode", "extractive"])
    assert result.exit_code == ExitCode.STORE
    assert "is damaged" in result.stderr and "Traceback" not in result.output


def test_tampered_text_is_a_hash_mismatch(store: Path) -> None:
    table = Store.open(store).table()
    row = Store.open(store).rows(["corpus:hr/parental-leave.md#1"], ["title", "heading_path", "text",
                                                                "search_text"])["corpus:hr/parental-leave.md#1"]
    table.update(where="chunk_id = 'corpus:hr/parental-leave.md#1'",
                 values={"text": row["text"].replace("16", "61"),
                         "search_text": row["search_text"].replace("16", "61")})
    data = assert_damaged("chunk hash mismatches")
    assert data["problems"]["chunk hash mismatches"]["examples"] == ["corpus:hr/parental-leave.md#1"]


def test_text_without_its_search_text_is_reported(store: Path) -> None:
    Store.open(store).table().update(where="chunk_id = 'corpus:hr/parental-leave.md#1'",
                                     values={"text": "tampered"})
    assert_damaged("search text not matching chunk text")


def test_duplicate_rows_are_reported(store: Path) -> None:
    table = Store.open(store).table()
    rows = table.search().where("chunk_id = 'corpus:hr/benefits.md#0'").limit(1).to_arrow()
    table.add(rows)  # what two concurrent merge_inserts leave behind
    data = assert_damaged("duplicate chunk ids")
    assert "documents with missing or repeated chunks" in data["problems"]


def test_missing_data_file_is_reported(store: Path) -> None:
    data_file(store).unlink()
    data = assert_damaged("missing data files")
    assert data["repair"].endswith(str(store.parent / "corpus"))  # from the last run's paths
    result = runner.invoke(app, ["ask", QUESTION, "--mode", "extractive"])
    assert result.exit_code == ExitCode.STORE and "Traceback" not in result.output


def test_damaged_manifest_is_replaced_by_rebuild(store: Path) -> None:
    (store / "ragcli.json").write_text("{not json")
    result = runner.invoke(app, ["status", "--verify"])
    assert result.exit_code == ExitCode.STORE and "manifest" in result.stderr
    result = runner.invoke(app, ["reindex", "--rebuild", str(store.parent / "corpus")])
    assert result.exit_code == 0, result.output
    assert verify()[0] == 0
