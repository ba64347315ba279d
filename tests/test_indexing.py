"""Production ingestion: formats, ACLs, incremental reindex, locking, crash safety, staleness.

All against the real LanceDB store, with the hash embedder for speed."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import HANDBOOK, ROOT
from fakes import HashEmbedder
from pdfs import make_pdf
from ragcli.audit.trace import AuditLog
from ragcli.errors import EmbedderMismatchError, InputError
from ragcli.ingest.indexing import index_paths, ingest, reindex, staleness
from ragcli.ingest.sources import load_documents
from ragcli.search.retrieval import retrieve_configured
from ragcli.settings import Settings
from ragcli.store.store import Store
from ragcli.store.verify import verify

SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
RUNNER = Path(__file__).resolve().parent / "run_with_fakes.py"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(RUNNER), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RAGCLI_EMBEDDER": "test-hash", **(env or {})})


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    shutil.copytree(HANDBOOK, root)
    return root


# ---- formats ---------------------------------------------------------------------------------
def test_html_main_content_only(tmp_path: Path) -> None:
    page = tmp_path / "c" / "page.html"
    page.parent.mkdir()
    page.write_text("""<html><head><title>Kestrel status page</title><script>var x=1;</script>
    </head><body><nav>Home | Docs | Login</nav><main><h1>Status</h1><p>All systems go.</p>
    <h2>Limits</h2><table><tr><th>Plan</th><th>RPM</th></tr><tr><td>Team</td><td>600</td></tr>
    </table><pre>curl -s status.kestrel.example</pre><ul><li>one</li><li>two</li></ul></main>
    <footer>Copyright</footer></body></html>""")
    [doc] = load_documents([page.parent]).documents
    assert doc.title == "Kestrel status page"
    assert "Home | Docs" not in doc.text and "Copyright" not in doc.text and "var x" not in doc.text
    assert "# Status" in doc.text and "## Limits" in doc.text
    assert "| Plan | RPM |\n|---|---|\n| Team | 600 |" in doc.text
    assert "```\ncurl -s status.kestrel.example\n```" in doc.text
    assert "- one" in doc.text


def test_pdf_pages_are_kept_in_provenance(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    root = tmp_path / "c"
    root.mkdir()
    (root / "guide.pdf").write_bytes(make_pdf(["Llamas hum when content.",
                                               "Alpacas spit when annoyed."], "Camelid guide"))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    report = ingest([root], tmp_path / "s", hash_embedder)
    assert report.added == 1
    assert [Path(s.source).name for s in report.skipped] == ["broken.pdf"]
    assert report.skipped[0].reason.startswith(("broken PDF", "PDF has no"))
    rows = Store.open(tmp_path / "s").scan(["chunk_id", "text", "pages", "title"])
    pages = {r["text"]: r["pages"] for r in rows}
    assert pages == {"Llamas hum when content.\n\nAlpacas spit when annoyed.": [1, 2]} or \
        pages == {"Llamas hum when content.": [1], "Alpacas spit when annoyed.": [2]}
    assert rows[0]["title"] == "Camelid guide"


def test_beir_jsonl_is_one_document_per_line(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    corpus = tmp_path / "corpus.jsonl"
    lines = [{"_id": "d1", "title": "Llamas", "text": "Llamas are camelids."},
             {"_id": "d2", "title": "", "text": "Alpacas are smaller."},
             {"_id": "d3", "title": "Empty", "text": ""}]
    corpus.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    report = ingest([corpus], tmp_path / "s", hash_embedder)
    assert report.added == 3
    docs = Store.open(tmp_path / "s").documents()
    assert set(docs) == {"corpus:d1", "corpus:d2", "corpus:d3"}  # corpus:_id (the file's stem)
    assert docs["corpus:d1"]["source"] == f"{corpus}#d1" and docs["corpus:d1"]["doc_id"] == "d1"
    corpus.write_text("\n".join(json.dumps(x) for x in lines[:2]) + "\n")
    assert reindex([corpus], tmp_path / "s", hash_embedder).deleted == 1
    corpus.write_text('{"_id": "d1", "text": "ok"}\nnot json\n')
    broken = reindex([corpus], tmp_path / "s", hash_embedder)
    assert "line 2" in broken.skipped[0].reason
    assert broken.deleted == 0 and set(Store.open(tmp_path / "s").documents()) == {"corpus:d1", "corpus:d2"}


@pytest.mark.skipif(not SCIFACT.is_file(), reason="../shared/data/scifact not present")
def test_scifact_slice_ingests(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    part = tmp_path / "scifact.jsonl"
    with SCIFACT.open() as handle:
        part.write_text("".join(next(handle) for _ in range(300)))
    report = ingest([part], tmp_path / "s", hash_embedder)
    assert report.added == 300 and not report.skipped
    assert len(Store.open(tmp_path / "s").documents()) == 300


# ---- ACLs ------------------------------------------------------------------------------------
def test_acl_toml_globs_and_front_matter_precedence(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "legal").mkdir(parents=True)
    (root / "acl.toml").write_text('"legal/*" = ["legal"]\n"legal/open.md" = ["legal", "sales"]\n')
    (root / "legal" / "nda.md").write_text("NDA text\n")
    (root / "legal" / "open.md").write_text("Open text\n")
    (root / "legal" / "fm.md").write_text("---\nacl: [board]\n---\nBoard text\n")
    (root / "public.md").write_text("Public text\n")
    docs = {d.doc_id: d.acl for d in load_documents([root]).documents}
    assert docs == {"legal/nda.md": ("legal",), "legal/open.md": ("legal", "sales"),
                    "legal/fm.md": ("board",), "public.md": ("public",)}


def test_acl_change_alone_embeds_nothing(corpus: Path, tmp_path: Path,
                                         hash_embedder: HashEmbedder) -> None:
    store_path = tmp_path / "s"
    reindex([corpus], store_path, hash_embedder)
    doc = corpus / "hr" / "parental-leave.md"
    doc.write_text(doc.read_text().replace("title: Parental leave policy",
                                           "title: Parental leave policy\nacl: [hr]"))
    report = reindex([corpus], store_path, hash_embedder)
    assert (report.acl_changed, report.changed, report.chunks_embedded) == (1, 0, 0)
    assert report.chunks_written > 0
    found = retrieve_configured(Store.open(store_path), hash_embedder, "parental leave weeks", [],
                                Settings(top_k=10))
    assert all(h.doc_id != "hr/parental-leave.md" for h in found.hits)


# ---- incremental reindex ---------------------------------------------------------------------
def test_edit_delete_and_noop(corpus: Path, tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    store_path = tmp_path / "s"
    first = reindex([corpus], store_path, hash_embedder)
    assert first.added == 49
    doc = corpus / "security" / "mfa.md"
    doc.write_text(doc.read_text().replace("within 1 hour", "within 30 minutes"))
    (corpus / "runbooks" / "redis-cache.md").unlink()
    report = reindex([corpus], store_path, hash_embedder)
    assert (report.added, report.changed, report.deleted, report.unchanged) == (0, 1, 1, 47)
    assert 0 < report.chunks_embedded < report.chunks_written  # unchanged chunks kept vectors
    store = Store.open(store_path)
    assert store.search_fts("FLUSHDB redis sessions", ["public"], 50) == [] or all(
        r["doc_id"] != "runbooks/redis-cache.md"
        for r in store.search_fts("FLUSHDB redis sessions", ["public"], 50))
    vector = hash_embedder.embed(["Flushing the Redis session cache FLUSHDB"])[0]
    assert all(r["doc_id"] != "runbooks/redis-cache.md"
               for r in store.search_vector(vector, ["public"], 100))
    version = store.version
    again = reindex([corpus], store_path, hash_embedder)
    assert (again.added, again.changed, again.deleted, again.chunks_written) == (0, 0, 0, 0)
    assert Store.open(store_path).version == version


def test_unreadable_file_is_skipped_not_deleted(corpus: Path, tmp_path: Path,
                                                hash_embedder: HashEmbedder) -> None:
    store_path = tmp_path / "s"
    reindex([corpus], store_path, hash_embedder)
    (corpus / "hr" / "benefits.md").write_bytes(b"\xff\xfe\x00binary now")
    report = reindex([corpus], store_path, hash_embedder)
    assert report.deleted == 0 and len(report.skipped) == 1
    assert "corpus:hr/benefits.md" in Store.open(store_path).documents()


def test_changing_the_embedder_reembeds_on_reindex(corpus: Path, tmp_path: Path,
                                                   hash_embedder: HashEmbedder) -> None:
    class Smaller(HashEmbedder):
        id = "test-hash-64"
        dim = 64

    store_path = tmp_path / "s"
    reindex([corpus], store_path, hash_embedder)
    with pytest.raises(EmbedderMismatchError):
        ingest([corpus], store_path, Smaller())
    report = reindex([corpus], store_path, Smaller())
    assert report.rebuilt and report.added == 49
    store = Store.open(store_path)
    assert store.manifest.embedder == "test-hash-64" and store.manifest.dim == 64


def test_pinned_versions_survive_cleanup(corpus: Path, tmp_path: Path,
                                         hash_embedder: HashEmbedder) -> None:
    store_path = tmp_path / "s"
    reindex([corpus], store_path, hash_embedder)
    store = Store.open(store_path)
    pinned = store.version
    store.pin_version(pinned)
    store.pin_version(pinned)  # idempotent
    for text in ("one", "two"):
        (corpus / f"{text}.md").write_text(f"# {text}\n\nnew text {text}\n")
        index_paths([corpus], store_path, hash_embedder, delete_missing=True,
                    retention=timedelta(0))
    table = Store.open(store_path).table()
    versions = {v["version"] for v in table.list_versions()}
    assert pinned in versions
    table.checkout(pinned)
    assert table.count_rows() > 0


def test_status_reports_staleness(corpus: Path, tmp_path: Path,
                                  hash_embedder: HashEmbedder) -> None:
    store_path = tmp_path / "s"
    reindex([corpus], store_path, hash_embedder)
    assert staleness(Store.open(store_path)).to_json()["stale"] is False
    doc = corpus / "it" / "vpn.md"
    doc.write_text(doc.read_text() + "\nAlso: restart the client.\n")
    (corpus / "it" / "hardware.md").unlink()
    (corpus / "it" / "scanners.md").write_text("# Scanners\n\nThere are none.\n")
    touched = corpus / "it" / "helpdesk.md"
    os.utime(touched, (time.time() + 5, time.time() + 5))  # newer mtime, same content
    stale = staleness(Store.open(store_path))
    assert (stale.changed, stale.deleted, stale.new) == (
        ("corpus:it/vpn.md",), ("corpus:it/hardware.md",), ("corpus:it/scanners.md",))


# ---- one writer, crash safety ----------------------------------------------------------------
def _big_corpus(root: Path, documents: int) -> Path:
    root.mkdir(parents=True)
    rng = random.Random(7)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    for i in range(documents):
        body = "\n\n".join(" ".join(rng.choice(words) for _ in range(40)) for _ in range(3))
        (root / f"doc{i:04d}.md").write_text(f"# Document {i}\n\n{body}\n")
    return root


def _assert_consistent(store_path: Path) -> dict[str, str]:
    rows = Store.open(store_path).scan(["chunk_id", "doc_id", "ordinal", "doc_hash", "chunk_hash"])
    ids = [r["chunk_id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate chunk ids"
    by_doc: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for row in rows:
        by_doc.setdefault(row["doc_id"], []).append(row)
    for doc_rows in by_doc.values():
        assert len({r["doc_hash"] for r in doc_rows}) == 1, "document half old, half new"
        assert sorted(r["ordinal"] for r in doc_rows) == list(range(len(doc_rows)))
    return {r["chunk_id"]: r["chunk_hash"] for r in rows}


def test_second_writer_exits_locked(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    corpus = _big_corpus(tmp_path / "c", 1200)
    store_path = tmp_path / "s"
    first = cli("reindex", str(corpus), "--store", str(store_path))
    lock = store_path / "writer.lock"
    deadline = time.time() + 60
    from filelock import FileLock, Timeout

    while time.time() < deadline:  # wait until the first process holds the lock
        if lock.exists():
            try:
                with FileLock(str(lock), timeout=0):
                    pass
            except Timeout:
                break
        time.sleep(0.02)
    second = cli("reindex", str(corpus), "--store", str(store_path))
    out, err = second.communicate(timeout=60)
    assert second.returncode == 8, (out, err)
    assert err.strip().startswith("ragcli: error: another ragcli process is writing")
    assert first.wait(timeout=120) == 0
    _assert_consistent(store_path)


def test_sigkill_mid_reindex_converges(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    """Ten reindexes, each with half the corpus to rewrite, each killed (SIGKILL) at a random
    moment while it is still running: after every kill the store opens and is consistent, and a
    final reindex gives exactly what a clean one gives. A run that ended before its kill is not
    counted as a kill, and most of them must really be killed."""
    corpus = _big_corpus(tmp_path / "c", 900)
    store_path = tmp_path / "s"
    start = time.monotonic()  # how long one run with this much work takes, killed or not
    assert cli("reindex", str(corpus), "--store", str(store_path)).wait(timeout=300) == 0
    duration = time.monotonic() - start
    rng = random.Random(3)
    killed = 0
    for trial in range(10):
        for file in sorted(corpus.iterdir())[trial % 2::2]:  # every run has work to do
            file.write_text(file.read_text() + f"\nEdited in trial {trial}.\n")
        proc = cli("reindex", str(corpus), "--store", str(store_path))
        time.sleep(rng.uniform(0.2, 0.8) * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        Store.open(store_path).table()  # the store always opens
        _assert_consistent(store_path)
        checked = verify(Store.open(store_path))
        assert checked.ok, checked.summary()
    assert killed >= 7, f"only {killed} of 10 reindexes were still running when killed"
    clean = tmp_path / "clean"
    reindex([corpus], clean, hash_embedder)
    final = reindex([corpus], store_path, hash_embedder)
    assert final.skipped == ()
    assert _assert_consistent(store_path) == _assert_consistent(clean)


def test_asks_during_a_reindex_see_one_version_each(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    """Several ask processes while a reindex rewrites every document in several commits: no errors,
    one audit record per ask, and each answer's passages are exactly those of one index version."""
    corpus = _big_corpus(tmp_path / "c", 700)
    store_path = tmp_path / "s"
    reindex([corpus], store_path, hash_embedder)
    first_version = Store.open(store_path).version
    for file in sorted(corpus.iterdir()):  # every document changes: 3 commits of 256 documents
        file.write_text(file.read_text().replace("alpha", "omega"))
    env = {"RAGCLI_STORE": str(store_path), "RAGCLI_AUDIT": str(tmp_path / "audit.sqlite3"),
           "RAGCLI_MIN_CONFIDENCE": "0"}
    writer = cli("reindex", str(corpus), env=env)
    asks: list[subprocess.Popen[str]] = []
    while writer.poll() is None or len(asks) < 12:
        wave = [cli("ask", f"Document {len(asks) + i} omega alpha beta", "--mode", "extractive",
                    "--json", env=env) for i in range(3)]
        for proc in wave:
            proc.wait(timeout=120)
        asks += wave
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    log = AuditLog(tmp_path / "audit.sqlite3")
    store = Store.open(store_path)
    versions = set()
    for proc in asks:
        out, err = proc.communicate()
        assert proc.returncode == 0, err
        record = log.get(json.loads(out)["request_id"])
        assert record is not None and record["status"] in ("answered", "refused")
        recorded = {r["chunk_id"]: r["chunk_hash"] for r in record["retrieved"]}
        at_version = store.at_version(record["index_version"]).rows(list(recorded), ["chunk_hash"])
        assert {c: r["chunk_hash"] for c, r in at_version.items()} == recorded
        versions.add(record["index_version"])
    assert len(list(log.recent(None))) == len(asks)  # no lost records, none extra
    assert max(versions) > first_version  # the last asks saw the finished reindex


def test_an_emptied_corpus_directory_is_deleted_only_when_allowed(corpus: Path, tmp_path: Path,
                                                                   hash_embedder: HashEmbedder) -> None:
    store_path = tmp_path / "store"
    reindex([corpus], store_path, hash_embedder)
    chunks = Store.open(store_path).count_chunks()
    shutil.rmtree(corpus)
    corpus.mkdir()  # an unmounted volume looks like this
    with pytest.raises(InputError, match="refusing to delete them all"):
        reindex([corpus], store_path, hash_embedder)
    assert Store.open(store_path).count_chunks() == chunks
    report = index_paths([corpus], store_path, hash_embedder, delete_missing=True, allow_empty=True)
    assert report.deleted == 49 and Store.open(store_path).count_chunks() == 0


def test_ingest_then_noop(handbook_store: Path, hash_embedder: HashEmbedder) -> None:
    store_path = handbook_store
    store = Store.open(store_path)
    docs = store.documents()
    assert len(docs) == len(list(HANDBOOK.rglob("*.md"))) + len(list(HANDBOOK.rglob("*.txt")))
    version = store.version
    again = ingest([HANDBOOK], store_path, hash_embedder)
    assert (again.added, again.changed, again.chunks_written) == (0, 0, 0)
    assert again.unchanged == len(docs)
    assert Store.open(store_path).version == version  # nothing written, no new version


def test_changed_document_is_replaced_whole(tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.md").write_text("# A\n\nalpha one\n\n# B\n\nalpha two\n")
    (corpus / "b.md").write_text("beta\n")
    ingest([corpus], tmp_path / "s", hash_embedder)
    (corpus / "a.md").write_text("# A\n\ngamma only\n")
    report = ingest([corpus], tmp_path / "s", hash_embedder)
    assert (report.added, report.changed, report.unchanged) == (0, 1, 1)
    rows = Store.open(tmp_path / "s").scan(["chunk_id", "text"])
    assert sorted((r["chunk_id"], r["text"]) for r in rows) == [("c:a.md#0", "gamma only"),
                                                                ("c:b.md#0", "beta")]
    fts = Store.open(tmp_path / "s").search_fts("alpha", ["public"], 10)
    assert fts == []  # the old chunk is gone from the full-text index too
