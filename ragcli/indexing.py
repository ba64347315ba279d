"""ingest and reindex: load sources, diff them against the store, embed only what changed, write.

- A document whose content hash and ACL match the store is left alone: a run with nothing changed
  writes nothing and creates no table version.
- A changed document is re-chunked; each chunk whose hash the store already holds for that
  document keeps its stored vector, so an ACL-only change embeds nothing.
- ``reindex`` also deletes documents that disappeared from a corpus root it was given (a directory
  or a JSONL file); a file that is merely unreadable now is skipped, never deleted.
- Each commit replaces whole documents (``Store.replace_documents``): a concurrent ``ask`` sees a
  document all old or all new. One writer at a time (``Store.writer_lock``).
- ``reindex`` with another embedder than the store's re-embeds everything from the given paths.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .chunking import chunk_document, split_blocks
from .embedder import Embedder
from .errors import InputError, StoreError
from .ids import new_id
from .models import PUBLIC_GROUP, Chunk, Document
from .sources import Loaded, Skipped, load_documents
from .store import FORMAT, Store

if TYPE_CHECKING:
    import numpy as np

ProgressCallback = Callable[[int, int], None]
# doc_ids -> the intact stored vectors of those documents by (doc_id, chunk_hash)
Reusable = Callable[[Sequence[str]], "dict[tuple[str, str], np.ndarray]"]
COMMIT_DOCUMENTS = 256  # whole documents per commit
_JSONL_ROW = re.compile(r"^(.*?\.jsonl)#", re.IGNORECASE)
COMMIT_CHUNKS = 4096
CHUNK_TOKENS = 200  # target ceiling of a chunk, in embedder tokens (MiniLM reads 254)


@dataclass(frozen=True)
class IndexReport:
    run_id: str
    added: int
    changed: int  # content changed
    acl_changed: int  # only the ACL (or the corpus root) changed: rows rewritten, nothing embedded
    deleted: int
    unchanged: int
    chunks_written: int
    chunks_embedded: int
    version: int | None
    seconds: float
    skipped: tuple[Skipped, ...] = field(default=())
    ignored: int = 0  # files of unsupported types found in directories
    rebuilt: bool = False  # every chunk was embedded again (--rebuild, or a new embedder or format)

    def to_json(self) -> dict[str, object]:
        return {"run_id": self.run_id, "added": self.added, "changed": self.changed,
                "acl_changed": self.acl_changed, "deleted": self.deleted,
                "unchanged": self.unchanged, "chunks_written": self.chunks_written,
                "chunks_embedded": self.chunks_embedded, "version": self.version,
                "seconds": round(self.seconds, 3), "ignored": self.ignored,
                "rebuilt": self.rebuilt,
                "skipped": [{"source": s.source, "reason": s.reason} for s in self.skipped]}


def chunk_documents(documents: Sequence[Document], embedder: Embedder) -> list[Chunk]:
    limit = min(CHUNK_TOKENS, embedder.max_tokens)
    return [c for d in documents for c in chunk_document(d, embedder.count_tokens, limit)]


class LocalEngine:
    """Chunk and embed in this process (onnxruntime uses every core); see distributed.py for Ray."""

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def prepare(self, documents: Sequence[Document], embedder: Embedder, reusable: Reusable,
                batch_documents: int,
                ) -> Iterator[tuple[list[Document], list[Chunk], np.ndarray, int]]:
        """Yield (documents, their chunks, vectors, newly embedded) per commit of whole documents."""
        import numpy as np

        for start in range(0, len(documents), batch_documents):
            batch = list(documents[start:start + batch_documents])
            stored = reusable([d.doc_id for d in batch])  # per commit: memory stays bounded
            chunks = chunk_documents(batch, embedder)
            vectors = np.zeros((len(chunks), embedder.dim), dtype=np.float32)
            missing: list[int] = []
            for i, c in enumerate(chunks):
                kept = stored.get((c.doc_id, c.chunk_hash))
                if kept is None:
                    missing.append(i)
                else:
                    vectors[i] = kept
            for offset in range(0, len(missing), COMMIT_CHUNKS):
                part = missing[offset:offset + COMMIT_CHUNKS]
                vectors[part] = embedder.embed([chunks[i].search_text for i in part])
            yield batch, chunks, vectors, len(missing)


def _stored_vectors(store: Store, doc_ids: Sequence[str]) -> dict[tuple[str, str], np.ndarray]:
    """The intact stored vectors of these documents by (doc_id, chunk_hash): reused, not re-embedded
    (a damaged, non-finite one is left out, so it is embedded again)."""
    import numpy as np

    kept: dict[tuple[str, str], np.ndarray] = {}
    for start in range(0, len(doc_ids), COMMIT_DOCUMENTS):
        for key, value in store.vectors_for(list(doc_ids[start:start + COMMIT_DOCUMENTS])).items():
            vector = np.asarray(value, dtype=np.float32)
            if np.isfinite(vector).all():
                kept[key] = vector
    return kept


def index_paths(paths: Sequence[Path], store_path: Path | str, embedder: Embedder, *,
                delete_missing: bool, rebuild: bool = False, allow_empty: bool = False,
                progress: ProgressCallback | None = None,
                retention: timedelta = timedelta(days=7), engine: Any = None,
                default_acl: tuple[str, ...] = (PUBLIC_GROUP,)) -> IndexReport:
    """Bring the store at ``store_path`` in line with the files under ``paths``.

    A corpus root in which nothing is found is an error (exit 4): for ``ingest`` always, for
    ``reindex`` when the store holds documents from that root, unless ``allow_empty`` (an
    unmounted or mistyped corpus directory must not delete a whole corpus from cron).
    ``rebuild`` drops every chunk first and embeds everything again: the repair for a store that
    ``status --verify`` found damaged (it also rewrites a damaged manifest).
    ``engine`` chunks and embeds (``LocalEngine`` by default; ``distributed.RayEngine``); what is
    indexed, and how it is written, does not depend on it. ``default_acl`` is what a document
    that no acl.toml rule or front matter gives an ACL gets (sources.AclResolver)."""
    import numpy as np

    started = time.perf_counter()
    run_id = new_id()
    loaded = load_documents(paths, default_acl)
    skipped = tuple(loaded.skipped)
    if not delete_missing and not loaded.documents and not skipped:
        raise InputError(f"no supported files in {', '.join(map(str, paths))}"
                         + (f" ({loaded.ignored} files of other types ignored)" if loaded.ignored else ""),
                         hint="ragcli reads .md, .markdown, .txt, .html, .htm, .pdf and BEIR .jsonl")
    if not loaded.documents and not Store.exists(store_path):
        return IndexReport(run_id, 0, 0, 0, 0, 0, 0, 0, None, time.perf_counter() - started,
                           skipped, loaded.ignored)
    store = Store.open_for_rebuild(store_path, embedder.id, embedder.dim) if rebuild \
        else Store.open_or_create(store_path, embedder.id, embedder.dim)
    with store.writer_lock():
        rebuilt = rebuild or store.manifest.embedder != embedder.id or store.manifest.format != FORMAT
        if rebuilt:
            if not delete_missing:
                store.require_embedder(embedder.id)  # raise, with a hint
                store.require_current()
            _refuse_to_drop_corpora(store, loaded)
            reason = "--rebuild" if rebuild else \
                f"embedder {store.manifest.embedder} -> {embedder.id}" \
                if store.manifest.embedder != embedder.id else \
                f"store format {store.manifest.format} -> {FORMAT}"
            store.reset(embedder.id, embedder.dim, reason)
        existing = store.documents() if store.has_table() else {}
        if delete_missing and not allow_empty:
            _refuse_empty_roots(loaded, existing)
        version_before = store.version if existing else None
        documents: dict[str, Document] = {}
        for document in loaded.documents:
            if next(split_blocks(document.text), None) is not None:
                documents[document.doc_id] = document
            else:  # only headings, say: nothing to embed, and never "added" on every run
                skipped += (Skipped(document.source, "no indexable text"),)
        added = [d for d in documents.values() if d.doc_id not in existing]
        changed = [d for d in documents.values()
                   if d.doc_id in existing and existing[d.doc_id]["doc_hash"] != d.doc_hash]
        acl_only = [d for d in documents.values()  # also a corpus that moved: rows rewritten
                    if d.doc_id in existing and existing[d.doc_id]["doc_hash"] == d.doc_hash
                    and (existing[d.doc_id]["acl"] != d.acl or existing[d.doc_id]["root"] != d.root)]
        deleted = [doc_id for doc_id, e in existing.items()
                   if e["root"] in loaded.roots and doc_id not in documents
                   and (e["root"], doc_id) not in loaded.unreadable] if delete_missing else []
        todo = changed + acl_only + added

        def reusable(doc_ids: Sequence[str]) -> dict[tuple[str, str], np.ndarray]:
            return _stored_vectors(store, [d for d in doc_ids if d in existing])

        written = embedded = done = 0
        with engine or LocalEngine() as running:
            for batch, chunks, vectors, fresh in running.prepare(todo, embedder, reusable,
                                                                 COMMIT_DOCUMENTS):
                done += len(batch)
                last = done >= len(todo)
                roots = {d.doc_id: (d.root, d.mtime) for d in batch}
                store.replace_documents([d.doc_id for d in batch] + (deleted if last else []),
                                        chunks, vectors, run_id=run_id, roots=roots)
                written += len(chunks)
                embedded += fresh
                if progress:
                    progress(done, len(todo))
        if deleted and not todo:  # nothing to write, only deletions: one commit
            store.replace_documents(deleted, [], np.zeros((0, embedder.dim), dtype=np.float32),
                                    run_id=run_id, roots={})
        if store.has_table() and (todo or deleted or version_before is None):
            store.refresh_indices(retention)
        version = store.version if store.has_table() else None
        report = IndexReport(run_id, len(added), len(changed), len(acl_only), len(deleted),
                             len(documents) - len(todo), written, embedded, version,
                             time.perf_counter() - started, skipped, loaded.ignored, rebuilt)
        store.record_run({"finished_at": datetime.now(UTC).isoformat(),
                          "command": "reindex" if delete_missing else "ingest",
                          "paths": [str(p.resolve()) for p in paths], **report.to_json()})
    return report


def ingest(paths: Sequence[Path], store_path: Path, embedder: Embedder,
           progress: ProgressCallback | None = None) -> IndexReport:
    """Add new and changed documents; never delete."""
    return index_paths(paths, store_path, embedder, delete_missing=False, progress=progress)


def reindex(paths: Sequence[Path], store_path: Path, embedder: Embedder,
            progress: ProgressCallback | None = None) -> IndexReport:
    """Add, update and delete so that the store matches the corpus roots in ``paths``."""
    return index_paths(paths, store_path, embedder, delete_missing=True, progress=progress)


@dataclass(frozen=True)
class AclChange:
    """A document whose ACL on disk (front matter, acl.toml, default_acl) differs from the store's."""

    doc_id: str
    stored: tuple[str, ...]
    now: tuple[str, ...]
    rule: str


@dataclass(frozen=True)
class Staleness:
    """Sources that changed since they were indexed: what a reindex would pick up."""

    changed: tuple[str, ...]
    deleted: tuple[str, ...]
    new: tuple[str, ...]
    acl_changed: tuple[AclChange, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"changed": len(self.changed), "deleted": len(self.deleted), "new": len(self.new),
                "acl_changed": len(self.acl_changed),
                "stale": bool(self.changed or self.deleted or self.new or self.acl_changed),
                "examples": sorted([*self.changed, *self.deleted, *self.new])[:10],
                "acl_pending": [{"doc_id": c.doc_id, "stored": list(c.stored), "now": list(c.now),
                                 "rule": c.rule} for c in self.acl_changed[:50]]}


def staleness(store: Store, default_acl: tuple[str, ...] = (PUBLIC_GROUP,)) -> Staleness:
    """Compare the store with its sources on disk: content (mtime first, then content hash) and
    permissions (the acl.toml rules and ``default_acl`` as they are now; a document whose rules
    disagree with the store is read, so that its front matter still wins)."""
    from .sources import LOADERS, AclResolver, SkipFile, Source, walk

    resolver = AclResolver(default_acl)
    docs = store.documents()
    by_file: dict[tuple[str, str], list[str]] = {}
    for doc_id, entry in docs.items():
        row = _JSONL_ROW.match(entry["source"])  # a JSONL row's source is "file.jsonl#_id"
        by_file.setdefault((row.group(1) if row else entry["source"], entry["root"]), []).append(doc_id)
    changed: list[str] = []
    deleted: list[str] = []
    acl_changed: list[AclChange] = []
    for (file, root), doc_ids in by_file.items():
        path = Path(file)
        if not path.is_file():
            deleted.extend(doc_ids)
            continue
        jsonl = path.suffix.lower() == ".jsonl"
        try:
            rules = {d: resolver.resolve(path, d if jsonl else None).groups for d in doc_ids}
        except InputError:
            rules = {}  # an unreadable acl.toml: a reindex will say so; read the files
        if all(docs[d]["mtime"] == path.stat().st_mtime and docs[d]["acl"] == rules.get(d)
               for d in doc_ids):
            continue
        loader = LOADERS.get(path.suffix.lower())
        try:
            relative = path.name if path == Path(root) else path.relative_to(root).as_posix()
            decided = resolver.resolve(path)
            source = Source(path, Path(root), relative, True, decided.groups, decided.rule,
                            resolver if jsonl else None)
            fresh = {d.doc_id: d for d in loader(source)} if loader else {}
        except (SkipFile, ValueError, InputError):
            continue  # unreadable now: a reindex would skip it, not change it
        for doc_id in doc_ids:
            if doc_id not in fresh:
                deleted.append(doc_id)
            elif fresh[doc_id].doc_hash != docs[doc_id]["doc_hash"]:
                changed.append(doc_id)
            elif fresh[doc_id].acl != docs[doc_id]["acl"]:
                acl_changed.append(AclChange(doc_id, docs[doc_id]["acl"], fresh[doc_id].acl,
                                             fresh[doc_id].acl_rule))
    known = set(docs)
    known_files = {file for file, _ in by_file}
    new: list[str] = []
    for root in {e["root"] for e in docs.values()}:
        if Path(root).is_dir():
            for file in walk(Path(root)):
                doc_id = file.relative_to(root).as_posix()
                if file.suffix.lower() in LOADERS and doc_id not in known \
                        and str(file) not in known_files:
                    new.append(doc_id)
    return Staleness(tuple(changed), tuple(deleted), tuple(new),
                     tuple(sorted(acl_changed, key=lambda c: c.doc_id)))


def _refuse_empty_roots(loaded: Loaded, existing: dict[str, dict[str, object]]) -> None:
    found = {d.root for d in loaded.documents} | {root for root, _ in loaded.unreadable}
    for root in sorted(loaded.roots - found):
        held = sum(1 for e in existing.values() if e["root"] == root)
        if held:
            raise InputError(f"no documents found in {root}, but the store holds {held} from it; "
                             "refusing to delete them all",
                             hint="is the corpus unmounted or moved? pass --allow-empty to delete them")


def _refuse_to_drop_corpora(store: Store, loaded: Loaded) -> None:
    """A rebuild embeds everything again from the paths given: a corpus the store holds that is not
    among them would vanish. Refuse, naming each one (a store too damaged to list its corpora
    cannot say; then the paths given are all there is)."""
    try:
        held = {e["root"] for e in store.documents().values()} if store.has_table() else set()
    except (StoreError, OSError, RuntimeError, ValueError):  # damaged: the rebuild is its repair
        return
    given = loaded.roots | {d.root for d in loaded.documents} | {r for r, _ in loaded.unreadable}
    missing = sorted(held - given)
    if missing:
        raise InputError(f"a rebuild embeds every corpus in the store again; not given: "
                         f"{', '.join(missing)}",
                         hint="give all of them: ragcli reindex --rebuild "
                              + " ".join(sorted(held | given)))

