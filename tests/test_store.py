"""The real LanceDB store (store.py): embedder checks, missing stores, the writer lock, reads
through lance; driven by ingest with the fast hash embedder."""

from pathlib import Path

import pytest

from conftest import HANDBOOK
from fakes import HashEmbedder
from ragcli.errors import EmbedderMismatchError, LockedError, StoreMissingError
from ragcli.ingest.indexing import ingest
from ragcli.store.store import Store


@pytest.fixture
def store_path(tmp_path: Path, hash_embedder: HashEmbedder) -> Path:
    path = tmp_path / "store"
    ingest([HANDBOOK], path, hash_embedder)
    return path


def test_store_refuses_other_embedder(store_path: Path) -> None:
    class Other(HashEmbedder):
        id = "other"

    with pytest.raises(EmbedderMismatchError):
        ingest([HANDBOOK], store_path, Other())


def test_missing_and_empty_store(tmp_path: Path) -> None:
    with pytest.raises(StoreMissingError, match="no ragcli store"):
        Store.open(tmp_path / "nothing")
    empty = Store.open_or_create(tmp_path / "empty", "x", 4)
    with pytest.raises(StoreMissingError, match="empty"):
        empty.table()


def test_second_writer_is_locked_out(store_path: Path, hash_embedder: HashEmbedder) -> None:
    store = Store.open(store_path)
    with store.writer_lock(), pytest.raises(LockedError):
        ingest([HANDBOOK], store_path, hash_embedder)


def test_reads_through_lance_give_what_lancedb_gives(store_path: Path,
                                                     hash_embedder: HashEmbedder) -> None:
    """The query path reads a local store through lance itself (no `import lancedb`); every row
    of both searches, scores and vectors included, is what lancedb's own searches return."""
    import json

    through_lance = Store.open(store_path)
    through_lancedb = Store.open(store_path)
    through_lancedb.table()  # a table opened by lancedb: the store reads through it
    assert through_lance._reader() is not None and through_lancedb._reader() is None
    questions = [json.loads(line)["question"] for line in
                 (HANDBOOK.parent.parent / "goldens" / "handbook.jsonl").read_text().splitlines()]

    def plain(rows: list[dict]) -> list[dict]:  # type: ignore[type-arg]
        return [{k: v.tolist() if k == "vector" else v for k, v in r.items()} for r in rows]

    for question, vector in zip(questions, hash_embedder.embed(questions), strict=True):
        for groups in (["public"], ["public", "hr", "finance", "eng"]):
            assert through_lance.search_vector(vector, groups, 20) == \
                through_lancedb.search_vector(vector, groups, 20)
            assert plain(through_lance.search_fts(question, groups, 20)) == \
                plain(through_lancedb.search_fts(question, groups, 20))
    assert through_lance.version == through_lancedb.version
    assert through_lance.count_chunks() == through_lancedb.count_chunks() > 0
    assert through_lance._reader() is not None  # counting did not open the lancedb table
    pinned = through_lance.at_version(through_lance.version)
    assert plain(pinned.search_fts("parental leave", ["public"], 5)) == \
        plain(through_lancedb.search_fts("parental leave", ["public"], 5))


def test_a_reader_process_imports_lance_without_pandas(store_path: Path) -> None:
    """`ask` and `chat` declare themselves readers: pyarrow.dataset's start-up import of pandas
    (0.45 s of a cold ask) is kept out, searches work, and pandas still works when imported
    later; a process that did not declare it (eval, a library caller) imports as usual."""
    import subprocess
    import sys

    search = (f"s = Store.open({str(store_path)!r}); v = HashEmbedder().embed(['leave'])[0]; "
              "hits = s.search_vector(v, ['public'], 5) + s.search_fts('leave', ['public'], 5); "
              "print(len(hits) > 0, 'pandas' in sys.modules); ")
    code = ("import sys; from ragcli.store.backings import reader_process; "
            "from ragcli.store.store import Store; from fakes import HashEmbedder; reader_process(); "
            + search +
            "import pyarrow as pa, pandas as pd; "
            "print(pa.table({'a': [1, 2]}).to_pandas()['a'].sum())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent)
    assert out.stdout.split() == ["True", "False", "3"]
    plain = "import sys; from ragcli.store.store import Store; from fakes import HashEmbedder; " + search
    out = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent)
    assert out.stdout.split() == ["True", "True"]


def test_the_query_path_does_not_import_lancedb(store_path: Path) -> None:
    """`import lancedb` is 1.8-2.7 s of a cold ask (its REST namespace client); retrieval,
    pinning the version and replay's drift check (``rows``) need only lance."""
    import subprocess
    import sys

    code = ("import sys; from ragcli.store.store import Store; from fakes import HashEmbedder; "
            f"s = Store.open({str(store_path)!r}); v = HashEmbedder().embed(['leave'])[0]; "
            "s.search_vector(v, ['public'], 5); h = s.search_fts('leave', ['public'], 5); "
            "s.pin_version(s.version); s.at_version(s.version).search_fts('leave', ['public'], 5); "
            "ids = [x['chunk_id'] for x in h]; r = s.rows(ids + ['nope'], ['chunk_hash', 'acl']); "
            "assert ids and sorted(r) == sorted(ids), r; "
            "assert all(r[c]['chunk_hash'] == x['chunk_hash'] for c, x in zip(ids, h)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('lancedb', 'lance_namespace', 'torch', 'transformers', 'sentence_transformers', "
            "'llama_cpp', 'ragas', 'peft', 'ray')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command, pandas", [("ask", False), ("status", True)])
def test_only_the_reader_commands_import_lance_without_pandas(
        handbook_store: Path, cli_env: dict[str, str], command: str, pandas: bool) -> None:
    """cli.app.main declares `ask` (and `chat`) processes readers; other commands import as
    usual. Read from the interpreter's own import log."""
    import os
    import subprocess
    import sys

    runner = Path(__file__).resolve().parent / "run_with_fakes.py"
    args = ["ask", "How many weeks of parental leave?", "--mode", "extractive", "--json"] \
        if command == "ask" else ["status", "--json"]
    out = subprocess.run([sys.executable, "-X", "importtime", str(runner), *args],
                         capture_output=True, text=True, env={**os.environ, **cli_env})
    assert out.returncode == 0, out.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()
                if line.startswith("import time:")}
    assert "lance" in imported
    assert ("pandas.core.api" in imported) is pandas


def test_a_reindex_with_nothing_to_do_reads_through_lance_only(handbook_store: Path,
                                                               cli_env: dict[str, str]) -> None:
    """A no-op reindex (cron's usual run) reads the store's documents through lance and writes
    nothing, so it never pays lancedb's import (1.2 s of its 2.2 s); read from the import log."""
    import json
    import os
    import subprocess
    import sys

    from conftest import HANDBOOK

    runner = Path(__file__).resolve().parent / "run_with_fakes.py"
    before = Store.open(handbook_store).version
    out = subprocess.run([sys.executable, "-X", "importtime", str(runner), "reindex",
                          str(HANDBOOK), "--json"],
                         capture_output=True, text=True, env={**os.environ, **cli_env})
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["added"] == report["changed"] == report["deleted"] == 0
    assert report["unchanged"] > 10 and report["version"] == before
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()
                if line.startswith("import time:")}
    assert "lance" in imported and "lancedb" not in imported


def test_pinning_beside_searches_on_other_threads(store_path: Path,
                                                  hash_embedder: HashEmbedder) -> None:
    """ask --batch's workers share one Store: one pins the version it read (pin_version) while
    another searches. lance refuses to tag through a handle a search is using ("Already
    borrowed"), so pins go through a handle of their own, one at a time."""
    from conftest import at_once
    from ragcli.search.retrieval import retrieve_configured
    from ragcli.settings import Settings

    store = Store.open(store_path)
    settings = Settings(store=store_path, embedder="test-hash")
    version = retrieve_configured(store, hash_embedder, "vacation days", ["hr"], settings).version

    def work(n: int) -> None:
        for i in range(25):
            if (n + i) % 2:
                store.pin_version(version)
            else:
                retrieve_configured(store, hash_embedder, "How long is a warning valid?", ["hr"],
                                    settings)

    assert at_once(work, 4) == []
    assert f"audit-v{version}" in store._tagger.tags.list()
