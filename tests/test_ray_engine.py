"""``--engine ray``: Ray Data chunking and embedding give the same store as the local engine.

Ray runs for real in local mode (``ray.init(num_cpus=2)``) with the real ONNX embedder and LanceDB.
Marked ``real``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import HANDBOOK
from ragcli.cli.app import app
from ragcli.ingest.distributed import RayEngine
from ragcli.ingest.indexing import index_paths
from ragcli.runtimes.embedder import get_embedder
from ragcli.settings import Settings
from ragcli.store.store import Store

pytestmark = pytest.mark.real
runner = CliRunner()


@pytest.fixture(scope="module")
def ray_local():  # type: ignore[no-untyped-def]
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def rows(store: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    table = Store.open(store).table()
    data = table.to_arrow().select(["chunk_id", "doc_id", "chunk_hash", "doc_hash", "acl", "source",
                                    "root", "heading_path", "text", "vector"]).to_pylist()
    return {r["chunk_id"]: r for r in data}


def assert_same_store(local: Path, ray_store: Path) -> None:
    ours, theirs = rows(local), rows(ray_store)
    assert sorted(ours) == sorted(theirs)
    for chunk_id, row in ours.items():
        other = theirs[chunk_id]
        for key in ("doc_id", "chunk_hash", "doc_hash", "acl", "source", "root", "heading_path",
                    "text"):
            assert row[key] == other[key], (chunk_id, key)
        np.testing.assert_allclose(row["vector"], other["vector"], atol=1e-5)


def test_cli_ray_ingest_matches_local_status_and_ids(tmp_path: Path) -> None:
    """The must-show, as a user runs it: a new process starts its own local Ray."""
    local, distributed = tmp_path / "local", tmp_path / "ray"

    def cli(*args: str) -> dict:  # type: ignore[type-arg]
        proc = subprocess.run([sys.executable, "-m", "ragcli", *args, "--json"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    local_report = cli("ingest", str(HANDBOOK), "--store", str(local))
    ray_report = cli("ingest", "--engine", "ray", str(HANDBOOK), "--store", str(distributed))
    for key in ("added", "changed", "deleted", "chunks_written", "chunks_embedded"):
        assert ray_report[key] == local_report[key], key
    local_status = cli("status", "--store", str(local))
    ray_status = cli("status", "--store", str(distributed))
    for key in ("documents", "chunks", "version", "embedder"):
        assert ray_status[key] == local_status[key], key
    assert_same_store(local, distributed)


def test_incremental_reindex_on_ray_matches_local(tmp_path: Path, ray_local) -> None:  # type: ignore[no-untyped-def]
    embedder = get_embedder(Settings().embedder)
    corpus = tmp_path / "corpus"
    shutil.copytree(HANDBOOK, corpus)

    def engine(name: str) -> RayEngine | None:
        return RayEngine(batch_chunks=16) if name == "ray" else None

    for name in ("local", "ray"):
        index_paths([corpus], tmp_path / name, embedder, delete_missing=False, engine=engine(name))
    # one edit, one deletion, and an acl.toml that changes the ACL of the pricing pages
    page = corpus / "engineering" / "code-review.md"
    page.write_text(page.read_text(encoding="utf-8") + "\n\nReviews are answered within one "
                    "working day.\n", encoding="utf-8")
    (corpus / "it" / "printers.md").unlink()
    (corpus / "acl.toml").write_text('"pricing/*" = ["sales"]\n', encoding="utf-8")
    reports = {name: index_paths([corpus], tmp_path / name, embedder, delete_missing=True,
                                 engine=engine(name)) for name in ("local", "ray")}
    local, ray_report = reports["local"].to_json(), reports["ray"].to_json()
    for key in ("added", "changed", "acl_changed", "deleted", "unchanged", "chunks_written",
                "chunks_embedded"):
        assert ray_report[key] == local[key], key
    assert local["changed"] == 1 and local["deleted"] == 1 and local["acl_changed"] >= 1
    # ACL-only documents keep their stored vectors on Ray too: only the edited page is embedded
    assert ray_report["chunks_embedded"] < ray_report["chunks_written"]
    assert_same_store(tmp_path / "local", tmp_path / "ray")


def die_once(marker: str) -> Callable[[], None]:
    """A fault for the embedding actor: the first worker to get here kills its own process, like
    an OOM kill (no exception, no cleanup); later ones go on."""
    def after_batch() -> None:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return
        os._exit(17)

    return after_batch


def test_a_worker_killed_mid_run_is_retried_and_nothing_is_lost(
        tmp_path: Path, ray_local) -> None:  # type: ignore[no-untyped-def]
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    marker = tmp_path / "worker-killed"
    embedder = get_embedder(Settings().embedder)
    report = index_paths([HANDBOOK], tmp_path / "ray", embedder, delete_missing=False,
                         engine=RayEngine(batch_chunks=16, after_batch=die_once(str(marker))))
    assert marker.exists()  # a worker process did die (os._exit) after embedding a batch
    local = index_paths([HANDBOOK], tmp_path / "local", embedder, delete_missing=False)
    assert report.chunks_written == local.chunks_written == len(rows(tmp_path / "ray"))
    assert_same_store(tmp_path / "local", tmp_path / "ray")


def test_without_ray_the_error_says_how_to_install(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = runner.invoke(app, ["ingest", "--engine", "ray", str(HANDBOOK), "--store",
                                 str(tmp_path / "s")])
    assert result.exit_code == 4, result.output
    assert "pip install 'ragcli[ray]'" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "s").exists()  # nothing was started or written


@pytest.mark.parametrize("args", [["--engine", "spark"], ["--ray-address", "localhost:6379"]])
def test_bad_engine_flags_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    result = runner.invoke(app, ["ingest", *args, str(HANDBOOK), "--store", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_a_task_that_fails_for_good_is_one_line_exit_17(tmp_path: Path, ray_local) -> None:  # type: ignore[no-untyped-def]
    """The test embedder is registered in this process only: a Ray worker cannot build it (as on a
    cluster node with another ragcli), so every chunking task fails."""
    result = runner.invoke(app, ["ingest", "--engine", "ray", str(HANDBOOK / "hr"), "--store",
                                 str(tmp_path / "s")], env={"RAGCLI_EMBEDDER": "test-hash"})
    assert result.exit_code == 17, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the Ray pipeline failed" in lines[0], result.stderr
    assert "unknown embedder 'test-hash'" in lines[0]
    assert not Store(tmp_path / "s", Store.open(tmp_path / "s").manifest).has_table()
