"""Ingest: load sources, diff them against the store by content hash, embed what changed, write.

A document whose content hash and ACL match what is stored is not re-chunked nor re-embedded.
Changed documents are replaced whole in one commit (see ``Store.replace_documents``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .chunking import chunk_document
from .embedder import Embedder
from .ids import new_id
from .models import Chunk, Document
from .sources import Skipped, load_documents
from .store import Store

ProgressCallback = Callable[[int, int], None]
COMMIT_CHUNKS = 4096  # chunks per merge_insert commit (whole documents only)
CHUNK_TOKENS = 200  # target ceiling of a chunk, in embedder tokens (the embedder reads 254)


@dataclass(frozen=True)
class IngestReport:
    run_id: str
    added: int
    changed: int
    unchanged: int
    chunks_written: int
    version: int | None
    seconds: float
    skipped: tuple[Skipped, ...] = field(default=())
    ignored: int = 0  # files of unsupported types found in directories

    def to_json(self) -> dict[str, object]:
        return {"run_id": self.run_id, "added": self.added, "changed": self.changed,
                "unchanged": self.unchanged, "chunks_written": self.chunks_written,
                "version": self.version, "seconds": round(self.seconds, 3),
                "ignored": self.ignored,
                "skipped": [{"source": s.source, "reason": s.reason} for s in self.skipped]}


def chunk_documents(documents: Sequence[Document], embedder: Embedder) -> list[Chunk]:
    limit = min(CHUNK_TOKENS, embedder.max_tokens)
    return [c for d in documents for c in chunk_document(d, embedder.count_tokens, limit)]


def ingest(paths: Sequence[Path], store_path: Path, embedder: Embedder,
           progress: ProgressCallback | None = None) -> IngestReport:
    """Index every supported file under ``paths`` into the store at ``store_path``."""
    started = time.perf_counter()
    run_id = new_id()
    loaded = load_documents(paths)
    documents, skipped = loaded.documents, loaded.skipped
    if not documents:
        return IngestReport(run_id, 0, 0, 0, 0, None, time.perf_counter() - started,
                            tuple(skipped), loaded.ignored)
    store = Store.open_for_write(store_path, embedder.id, embedder.dim)
    with store.writer_lock():
        table = store.table(create=True)
        existing = store.documents() if table.count_rows() else {}
        todo = [d for d in documents
                if (e := existing.get(d.doc_id)) is None
                or e["doc_hash"] != d.doc_hash or e["acl"] != d.acl]
        added = sum(1 for d in todo if d.doc_id not in existing)
        total_chunks = 0
        batch: list[Document] = []
        batch_chunks: list[Chunk] = []
        done = 0
        planned = len(todo)

        def commit() -> None:
            nonlocal total_chunks, done
            if not batch:
                return
            vectors = embedder.embed([c.search_text for c in batch_chunks])
            store.replace_documents([d.doc_id for d in batch], batch_chunks, vectors,
                                    run_id=run_id)
            total_chunks += len(batch_chunks)
            done += len(batch)
            if progress:
                progress(done, planned)
            batch.clear()
            batch_chunks.clear()

        for document in todo:
            batch.append(document)
            batch_chunks.extend(chunk_documents([document], embedder))
            if len(batch_chunks) >= COMMIT_CHUNKS or len(batch) >= 256:
                commit()
        commit()
        if todo or not existing:
            store.refresh_indices()
        version = store.version
    return IngestReport(run_id, added, len(todo) - added, len(documents) - len(todo),
                        total_chunks, version, time.perf_counter() - started, tuple(skipped),
                        loaded.ignored)
