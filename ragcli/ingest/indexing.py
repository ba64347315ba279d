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

from ..errors import InputError, StoreError
from ..ids import new_id
from ..models import PUBLIC_GROUP, Chunk, Document
from ..runtimes.embedder import Embedder
from ..store.store import Store
from ..store.table import FORMAT
from .chunking import chunk_document, split_blocks
from .sources import Corpora, Loaded, Skipped, in_scope, load_documents

if TYPE_CHECKING:
    import numpy as np

ProgressCallback = Callable[[int, int], None]
# doc_keys -> the intact stored vectors of those documents by (doc_key, chunk_hash)
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
    links: tuple[Skipped, ...] = ()  # symbolic links not followed (sources.follow_link), and why

    def to_json(self) -> dict[str, object]:
        return {"run_id": self.run_id, "added": self.added, "changed": self.changed,
                "acl_changed": self.acl_changed, "deleted": self.deleted,
                "unchanged": self.unchanged, "chunks_written": self.chunks_written,
                "chunks_embedded": self.chunks_embedded, "version": self.version,
                "seconds": round(self.seconds, 3), "ignored": self.ignored,
                "rebuilt": self.rebuilt,
                "skipped": [{"source": s.source, "reason": s.reason} for s in self.skipped],
                "links_not_followed": [{"source": s.source, "reason": s.reason} for s in self.links]}


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
            stored = reusable([d.doc_key for d in batch])  # per commit: memory stays bounded
            chunks = chunk_documents(batch, embedder)
            vectors = np.zeros((len(chunks), embedder.dim), dtype=np.float32)
            missing: list[int] = []
            for i, c in enumerate(chunks):
                kept = stored.get((c.doc_key, c.chunk_hash))
                if kept is None:
                    missing.append(i)
                else:
                    vectors[i] = kept
            for offset in range(0, len(missing), COMMIT_CHUNKS):
                part = missing[offset:offset + COMMIT_CHUNKS]
                vectors[part] = embedder.embed([chunks[i].search_text for i in part])
            yield batch, chunks, vectors, len(missing)


def _stored_vectors(store: Store, doc_keys: Sequence[str]) -> dict[tuple[str, str], np.ndarray]:
    """The intact stored vectors of these documents by (doc_key, chunk_hash): reused, not re-embedded
    (a damaged, non-finite one is left out, so it is embedded again)."""
    import numpy as np

    kept: dict[tuple[str, str], np.ndarray] = {}
    for start in range(0, len(doc_keys), COMMIT_DOCUMENTS):
        for key, value in store.vectors_for(list(doc_keys[start:start + COMMIT_DOCUMENTS])).items():
            vector = np.asarray(value, dtype=np.float32)
            if np.isfinite(vector).all():
                kept[key] = vector
    return kept


def index_paths(paths: Sequence[Path], store_path: Path | str, embedder: Embedder, *,
                delete_missing: bool, rebuild: bool = False, allow_empty: bool = False,
                progress: ProgressCallback | None = None,
                retention: timedelta = timedelta(days=7), engine: Any = None,
                default_acl: tuple[str, ...] = (PUBLIC_GROUP,),
                corpus: str | None = None, follow_symlinks: bool = False) -> IndexReport:
    """Bring the store at ``store_path`` in line with the files under ``paths``.

    A corpus root in which nothing is found is an error (exit 4): for ``ingest`` always, for
    ``reindex`` when the store holds documents from that root, unless ``allow_empty`` (an
    unmounted or mistyped corpus directory must not delete a whole corpus from cron).
    ``rebuild`` embeds everything again, every corpus the store holds included (Store.reset keeps
    the table's history where it can): the repair for a store that ``status --verify`` found
    damaged (it also rewrites a damaged manifest).
    ``engine`` chunks and embeds (``LocalEngine`` by default; ``distributed.RayEngine``); what is
    indexed, and how it is written, does not depend on it. ``default_acl`` is what a document
    that no acl.toml rule or front matter gives an ACL gets (sources.AclResolver). ``corpus``
    names the corpus of a new root (sources.Corpora; by default its basename).
    ``follow_symlinks`` also reads file links whose target is outside their corpus root (by
    default they are skipped and reported in ``links``; sources.follow_link).
    A format-2 store is migrated in place first, embedding nothing (Store.migrate)."""
    import numpy as np

    started = time.perf_counter()
    run_id = new_id()
    try:  # the corpora the store knows (a damaged manifest knows none: --rebuild repairs it)
        known = Store.open(store_path).manifest.corpora if Store.exists(store_path) else ()
    except StoreError:
        known = ()
    loaded = load_documents(paths, default_acl, Corpora(dict(known)), corpus,
                            follow_symlinks=follow_symlinks)
    skipped = tuple(loaded.skipped)
    if not delete_missing and not loaded.documents and not skipped:
        raise InputError(f"no supported files in {', '.join(map(str, paths))}"
                         + (f" ({loaded.ignored} files of other types ignored)" if loaded.ignored else "")
                         + (f" ({len(loaded.links)} symbolic links not followed: "
                            f"{loaded.links[0].reason})" if loaded.links else ""),
                         hint="ragcli reads .md, .markdown, .txt, .html, .htm, .pdf and BEIR .jsonl")
    if not loaded.documents and not Store.exists(store_path):
        return IndexReport(run_id, 0, 0, 0, 0, 0, 0, 0, None, time.perf_counter() - started,
                           skipped, loaded.ignored, links=tuple(loaded.links))
    store = Store.open_for_rebuild(store_path, embedder.id, embedder.dim) if rebuild \
        else Store.open_or_create(store_path, embedder.id, embedder.dim)
    with store.writer_lock():
        migrated = store.migrate()  # format 2 -> 3 in place, nothing embedded
        if migrated:  # name the corpora as the migration did
            loaded = load_documents(paths, default_acl, Corpora(dict(store.manifest.corpora)),
                                    corpus, follow_symlinks=follow_symlinks)
        rebuilt = rebuild or store.manifest.embedder != embedder.id or store.manifest.format != FORMAT
        if rebuilt:
            if not delete_missing:
                store.require_embedder(embedder.id)  # raise, with a hint
                store.require_current()
            loaded = _with_other_corpora(store, loaded, paths, default_acl, corpus, follow_symlinks)
            reason = "--rebuild" if rebuild else \
                f"embedder {store.manifest.embedder} -> {embedder.id}" \
                if store.manifest.embedder != embedder.id else \
                f"store format {store.manifest.format} -> {FORMAT}"
            store.reset(embedder.id, embedder.dim, reason)
        skipped = tuple(loaded.skipped)  # of the last load (a migration or a rebuild reloads)
        existing = store.documents() if store.has_table() else {}
        if delete_missing and not allow_empty:
            _refuse_empty_roots(loaded, existing)
        version_before = store.version if existing else None
        documents: dict[str, Document] = {}
        for document in loaded.documents:
            if next(split_blocks(document.text), None) is not None:
                documents[document.doc_key] = document
            else:  # only headings, say: nothing to embed, and never "added" on every run
                skipped += (Skipped(document.source, "no indexable text"),)
        added = [d for d in documents.values() if d.doc_key not in existing]
        changed = [d for d in documents.values()
                   if d.doc_key in existing and existing[d.doc_key]["doc_hash"] != d.doc_hash]
        acl_only = [d for d in documents.values()  # also a corpus that moved: rows rewritten
                    if d.doc_key in existing and existing[d.doc_key]["doc_hash"] == d.doc_hash
                    and (existing[d.doc_key]["acl"] != d.acl
                         or existing[d.doc_key]["root"] != d.root)]
        deleted = [key for key, e in existing.items()
                   if in_scope(loaded.scopes, e["corpus"], e["doc_id"]) and key not in documents
                   and key not in loaded.unreadable] if delete_missing else []
        todo = changed + acl_only + added

        def reusable(doc_keys: Sequence[str]) -> dict[tuple[str, str], np.ndarray]:
            return _stored_vectors(store, [k for k in doc_keys if k in existing])

        written = embedded = done = 0
        with engine or LocalEngine() as running:
            for batch, chunks, vectors, fresh in running.prepare(todo, embedder, reusable,
                                                                 COMMIT_DOCUMENTS):
                done += len(batch)
                last = done >= len(todo)
                roots = {d.doc_key: (d.root, d.mtime) for d in batch}
                store.replace_documents([d.doc_key for d in batch] + (deleted if last else []),
                                        chunks, vectors, run_id=run_id, roots=roots)
                written += len(chunks)
                embedded += fresh
                if progress:
                    progress(done, len(todo))
        if deleted and not todo:  # nothing to write, only deletions: one commit
            store.replace_documents(deleted, [], np.zeros((0, embedder.dim), dtype=np.float32),
                                    run_id=run_id, roots={})
        # a corpus is remembered once it has documents (a run that indexed nothing changes nothing)
        store.record_corpora({**dict(store.manifest.corpora),
                              **{d.corpus: loaded.corpora.roots[d.corpus] for d in documents.values()}})
        if store.has_table() and (todo or deleted or version_before is None or migrated):
            store.refresh_indices(retention)
        version = store.version if store.has_table() else None
        report = IndexReport(run_id, len(added), len(changed), len(acl_only), len(deleted),
                             len(documents) - len(todo), written, embedded, version,
                             time.perf_counter() - started, skipped, loaded.ignored, rebuilt,
                             tuple(loaded.links))
        store.record_run({"finished_at": datetime.now(UTC).isoformat(),
                          "command": "reindex" if delete_missing else "ingest",
                          "paths": [str(p.resolve()) for p in paths], **report.to_json()})
    return report


def ingest(paths: Sequence[Path], store_path: Path | str, embedder: Embedder,
           progress: ProgressCallback | None = None, corpus: str | None = None) -> IndexReport:
    """Add new and changed documents; never delete."""
    return index_paths(paths, store_path, embedder, delete_missing=False, progress=progress,
                       corpus=corpus)


def reindex(paths: Sequence[Path], store_path: Path | str, embedder: Embedder,
            progress: ProgressCallback | None = None, corpus: str | None = None) -> IndexReport:
    """Add, update and delete so that the store matches the corpus roots in ``paths``."""
    return index_paths(paths, store_path, embedder, delete_missing=True, progress=progress,
                       corpus=corpus)


@dataclass(frozen=True)
class AclChange:
    """A document whose ACL on disk (front matter, acl.toml, default_acl) differs from the store's."""

    doc_id: str  # its doc_key (corpus:doc_id)
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
    from .sources import LOADERS, AclResolver, SkipFile, Source, follow_link, walk

    resolver = AclResolver(default_acl)
    docs = store.documents()  # doc_key -> entry
    corpora = Corpora(dict(store.manifest.corpora))
    by_file: dict[tuple[str, str, str], list[str]] = {}
    for key, entry in docs.items():
        row = _JSONL_ROW.match(entry["source"])  # a JSONL row's source is "file.jsonl#_id"
        file = row.group(1) if row else entry["source"]
        by_file.setdefault((file, entry["root"], entry["corpus"]), []).append(key)
    changed: list[str] = []
    deleted: list[str] = []
    acl_changed: list[AclChange] = []
    for (file, root, corpus), keys in by_file.items():
        path = Path(file)
        if not path.is_file():
            deleted.extend(keys)
            continue
        try:
            target = follow_link(path, Path(root), corpora.nested(Path(root)), False) \
                if path.is_symlink() and path != Path(root) else None
        except SkipFile:  # a link reindex would not follow (without --follow-symlinks)
            deleted.extend(keys)
            continue
        jsonl = path.suffix.lower() == ".jsonl"
        try:
            rules = {k: resolver.resolve(path, docs[k]["doc_id"] if jsonl else None).groups
                     for k in keys}
        except InputError:
            rules = {}  # an unreadable acl.toml: a reindex will say so; read the files
        if all(docs[k]["mtime"] == path.stat().st_mtime and docs[k]["acl"] == rules.get(k)
               for k in keys):
            continue
        loader = LOADERS.get(path.suffix.lower())
        try:
            relative = path.name if path == Path(root) else path.relative_to(root).as_posix()
            decided = resolver.resolve(path)
            source = Source(path, Path(root), relative, True, decided.groups, decided.rule,
                            resolver if jsonl else None, corpus, target)
            fresh = {d.doc_key: d for d in loader(source)} if loader else {}
        except (SkipFile, ValueError, InputError):
            continue  # unreadable now: a reindex would skip it, not change it
        for key in keys:
            if key not in fresh:
                deleted.append(key)
            elif fresh[key].doc_hash != docs[key]["doc_hash"]:
                changed.append(key)
            elif fresh[key].acl != docs[key]["acl"]:
                acl_changed.append(AclChange(key, docs[key]["acl"], fresh[key].acl,
                                             fresh[key].acl_rule))
    known_files = {file for file, _, _ in by_file}
    new: list[str] = []
    for corpus, root in {(e["corpus"], e["root"]) for e in docs.values()}:
        if Path(root).is_dir():
            others = corpora.nested(Path(root))
            for file in walk(Path(root)):
                key = f"{corpus}:{file.relative_to(root).as_posix()}"
                if file.suffix.lower() in LOADERS and key not in docs \
                        and str(file) not in known_files \
                        and not any(other in file.parents for other in others) \
                        and _followed(file, Path(root), others):
                    new.append(key)
    return Staleness(tuple(changed), tuple(deleted), tuple(new),
                     tuple(sorted(acl_changed, key=lambda c: c.doc_id)))


def _followed(file: Path, root: Path, others: Sequence[Path]) -> bool:
    """Whether a reindex (without --follow-symlinks) would read ``file``."""
    from .sources import SkipFile, follow_link

    if not file.is_symlink():
        return True
    try:
        follow_link(file, root, others, False)
    except SkipFile:
        return False
    return True


def _refuse_empty_roots(loaded: Loaded, existing: dict[str, dict[str, Any]]) -> None:
    found = {(d.corpus, d.doc_id) for d in loaded.documents}
    for corpus, prefix in sorted(loaded.scopes):
        if any(in_scope({(corpus, prefix)}, c, d) for c, d in found) or any(
                k.startswith(f"{corpus}:") for k in loaded.unreadable):
            continue
        held = sum(1 for e in existing.values() if in_scope({(corpus, prefix)}, e["corpus"],
                                                           e["doc_id"]))
        if held:
            where = loaded.corpora.roots.get(corpus, corpus) + (f"/{prefix}" if prefix else "")
            raise InputError(f"no documents found in {where}, but the store holds {held} from it; "
                             "refusing to delete them all",
                             hint="is the corpus unmounted or moved? pass --allow-empty to delete them")


def _with_other_corpora(store: Store, loaded: Loaded, paths: Sequence[Path],
                        default_acl: tuple[str, ...], corpus: str | None,
                        follow_symlinks: bool = False) -> Loaded:
    """A rebuild embeds everything again: the documents of corpora the paths given do not cover
    are read again from the very files the store holds for them, so no corpus vanishes. A file
    that is gone is an error naming it (a store too damaged to list its documents cannot say;
    then the paths given are all there is)."""
    try:
        held = store.documents() if store.has_table() else {}
    except (StoreError, OSError, RuntimeError, ValueError):  # damaged: the rebuild is its repair
        return loaded
    found = {d.doc_key for d in loaded.documents} | loaded.unreadable
    files = sorted({m.group(1) if (m := _JSONL_ROW.match(e["source"])) else e["source"]
                    for key, e in held.items()
                    if key not in found and not in_scope(loaded.scopes, e["corpus"], e["doc_id"])})
    if not files:
        return loaded
    gone = [f for f in files if not Path(f).is_file()]
    if gone:
        raise InputError(f"a rebuild embeds every corpus in the store again, but {len(gone)} of "
                         f"their files are gone: {', '.join(gone[:5])}",
                         hint="reindex their corpus first (it deletes what is gone), then rebuild")
    return load_documents([*paths, *map(Path, files)], default_acl,
                          Corpora(dict(store.manifest.corpora)), corpus,
                          follow_symlinks=follow_symlinks)


def status_document(store: Store, default_acl: tuple[str, ...] = (PUBLIC_GROUP,),
                    hold_max_rows: int | None = None) -> dict[str, Any]:
    """``ragcli status``: what the store holds (documents, chunks, corpora, version, embedder,
    disk bytes), its last run, its vector index (or the size at which one is built), and which
    sources changed since (``staleness``), and how ``chat`` and ``ask --batch`` will search its
    vectors with the ``hold_max_rows`` setting (None: its default)."""
    from ..store.held import hold_limit, holds
    from ..store.indices import ANN_MIN_ROWS

    documents = store.documents()
    chunks = sum(d["chunks"] for d in documents.values())
    last = store.last_run() or {}
    return {"store": str(store.path), "documents": len(documents),
            "chunks": chunks,
            "version": store.version, "embedder": store.manifest.embedder,
            "corpora": dict(store.manifest.corpora),
            "created_at": store.manifest.created_at,
            "last_run": {k: last.get(k) for k in ("finished_at", "command", "added", "changed",
                                                  "deleted", "seconds")} if last else None,
            "disk_bytes": store.disk_bytes(),
            "vector_index": store.vector_index() or {"type": "none (flat scan)",
                                                     "built_at_rows": ANN_MIN_ROWS},
            # how chat and ask --batch search the vectors (Store.hold_vectors)
            "warm_vector_leg": {"path": "memory" if holds(chunks, hold_max_rows)
                                and not store.remote else "lance",
                                "hold_max_rows": hold_limit(hold_max_rows)},
            "staleness": staleness(store, default_acl).to_json()}


def verify_report(store: Store) -> Any:
    """``status --verify``: read back every row and file (verify.py); when the rows cannot be
    read, the paths of the last run stand in for the corpus roots the repair command names."""
    from ..store.verify import verify

    result = verify(store)
    if not result.roots:
        result.roots = list((store.last_run() or {}).get("paths") or [])
    return result
