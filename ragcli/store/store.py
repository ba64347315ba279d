"""A ragcli store: opening and creating it, its manifest, writing, pinning versions.

The package ``ragcli.store`` is the only code that talks to LanceDB: the table's shape
(table.py), reading and searching (reading.py), index maintenance (indices.py), held vectors
(held.py) and where a store lives (backings.py).

Layout of a store directory::

    <store>/ragcli.json     manifest: format, embedder id and dimension (the store refuses to mix)
    <store>/last_run.json   summary of the last ingest/reindex
    <store>/lancedb/        the LanceDB database with one table, ``chunks``
    <store>/writer.lock     held by the single writer (ingest / reindex)

A store can also live in object storage (``s3://bucket/prefix``, ``gs://...``, ``az://...``):
the same ``lancedb/`` database under the URI, the manifest and last run as rows of a second table
(``ragcli_meta``) because object stores have no atomic rename, and the writer lock on the writing
host (``$XDG_STATE_HOME/ragcli/locks``). Credentials and endpoints come from the environment
variables LanceDB reads (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``; see docs/scaling.md "Object storage").

Permissions are applied *inside* both search legs as a LanceDB prefilter on the ``acl`` label list,
so a chunk a user may not read is never a candidate, never scored and never returned.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    EmbedderMismatchError,
    LockedError,
    StoreError,
    StoreMissingError,
    VersionGoneError,
    first_line,
)
from ..ids import new_id
from ..models import Chunk, corpus_name
from ..paths import is_uri
from . import indices
from .backings import _backing, import_lance
from .reading import TableReader
from .table import FORMAT, PIN_PREFIX, TABLE, Manifest, _schema, _sql_list

if TYPE_CHECKING:
    import numpy as np


class Store(TableReader):
    """A ragcli store on disk. Open it with :meth:`open` (read) or :meth:`open_or_create`."""

    def __init__(self, path: Path | str, manifest: Manifest) -> None:
        super().__init__(path, manifest)
        self._pinning = threading.Lock()  # pin_version, one thread at a time
        self._tagger: Any = None  # a lance handle pin_version tags through (local stores)

    @staticmethod
    def exists(path: Path | str) -> bool:
        """Whether a store (its manifest) is at ``path``."""
        try:
            return _backing(path).read("manifest") is not None
        except OSError:
            return True  # there, but unreadable: open() says why

    @classmethod
    def open(cls, path: Path | str) -> Store:
        backing = _backing(path)
        where = backing.where("manifest")
        try:
            text = backing.read("manifest")
        except OSError as exc:
            raise StoreError(f"store manifest {where} cannot be read: {exc}") from None
        if text is None:
            raise StoreMissingError(f"no ragcli store at {path}",
                                    hint="run 'ragcli ingest PATH' first or pass --store")
        try:
            data = json.loads(text)
            manifest = Manifest(data["embedder"], int(data["dim"]), data["created_at"],
                                int(data["format"]), str(data.get("generation", "")),
                                tuple(data.get("rebuilds", ())),
                                tuple(sorted(dict(data.get("corpora", {})).items())))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"store manifest {where} is damaged: {exc}",
                             hint="re-create the store with 'ragcli ingest'") from None
        if manifest.format > FORMAT:
            raise StoreError(f"store {path} was written by a newer ragcli (format {manifest.format})")
        return cls(path, manifest)

    @classmethod
    def open_or_create(cls, path: Path | str, embedder_id: str, dim: int) -> Store:
        """Open the store at ``path``, creating an empty one (for this embedder) if there is none.

        The embedder is not checked here: writers check it under the lock (see indexing.py).
        """
        if cls.exists(path):
            return cls.open(path)
        if not is_uri(path):
            path = Path(path)
        _backing(path).create()
        store = cls(path, Manifest(embedder_id, dim, datetime.now(UTC).isoformat(),
                                   generation=new_id()))
        store._write_manifest()
        return store

    @classmethod
    def open_for_rebuild(cls, path: Path | str, embedder_id: str, dim: int) -> Store:
        """Like :meth:`open_or_create`, but a damaged manifest is replaced (``reindex --rebuild``)."""
        try:
            return cls.open_or_create(path, embedder_id, dim)
        except StoreError:
            if not cls.exists(path):
                raise
        store = cls(path, Manifest(embedder_id, dim, datetime.now(UTC).isoformat(),
                                   generation=new_id(),
                                   rebuilds=({"at": datetime.now(UTC).isoformat(),
                                              "reason": "the manifest was damaged",
                                              "kind": "new-manifest"},)))
        store._write_manifest()
        return store

    def _write_manifest(self) -> None:
        self.backing.write("manifest", json.dumps(self.manifest.to_json(), indent=2) + "\n")

    def reset(self, embedder_id: str, dim: int, reason: str) -> None:
        """Empty the store for a rebuild that embeds everything again, keeping its history.

        With the same vector dimension the chunks table is kept and emptied (one new version):
        every earlier version and its ``audit-v<N>`` tag stays, version numbers go on, and replay
        of an older request checks out exactly the version it recorded. A new dimension cannot
        share the table: it is dropped and the store starts a new *generation*; records of the old
        one then replay to exit 13, naming this rebuild. Either way the rebuild is recorded in
        the manifest. Crash-safe: if killed midway, the manifest still names the old embedder, so
        the next reindex resets again and converges.
        """
        db = self._db()
        exists = TABLE in db.list_tables().tables
        before = int(db.open_table(TABLE).version) if exists else None
        in_place = exists and dim == self.manifest.dim and self.manifest.format == FORMAT
        if in_place:
            self.table().delete("true")
        elif exists:
            db.drop_table(TABLE)
        self._table = None
        self._dataset = self.held = self._tagger = None  # what was read before the reset is gone
        entry = {"at": datetime.now(UTC).isoformat(), "reason": reason,
                 "kind": "in-place" if in_place or not exists else "new-table",
                 "embedder_before": self.manifest.embedder, "embedder_after": embedder_id,
                 "generation_before": self.manifest.generation, "last_version_before": before}
        self.manifest = Manifest(embedder_id, dim, self.manifest.created_at,
                                 generation=self.manifest.generation if in_place or not exists
                                 else new_id(),
                                 rebuilds=(*self.manifest.rebuilds, entry),
                                 corpora=self.manifest.corpora)
        self._write_manifest()

    def record_corpora(self, roots: dict[str, str]) -> None:
        """Remember every corpus name and root (under the writer lock)."""
        corpora = tuple(sorted(roots.items()))
        if corpora != self.manifest.corpora:
            self.manifest = dataclasses.replace(self.manifest, corpora=corpora)
            self._write_manifest()

    def migrate(self) -> bool:
        """Bring a format-2 store to this format in place, without embedding anything: each
        corpus root gets a name (its basename; -2, -3... for a repeat), rows get ``corpus`` and
        ``doc_key`` columns and their chunk ids the ``corpus:`` prefix. Earlier versions stay in
        the table (replay reads what a version has). Returns whether it migrated."""
        if self.manifest.format != 2:
            return False
        if TABLE in self._db().list_tables().tables:
            table = self._db().open_table(TABLE)
            self._table = table
            roots = sorted({r["root"] for r in table.search().select(["root"])
                            .limit(max(1, table.count_rows())).to_list()})
            names: dict[str, str] = {}
            for root in roots:
                base = corpus_name(Path(root))
                name, n = base, 2
                while name in names.values():
                    name, n = f"{base}-{n}", n + 1
                names[root] = name
            if "corpus" not in table.schema.names:
                table.add_columns({"corpus": "CAST('' AS STRING)", "doc_key": "doc_id"})
            for root, name in names.items():
                literal = name.replace("'", "''")
                table.update(where=f"root = '{root.replace(chr(39), chr(39) * 2)}'",
                             values_sql={"corpus": f"'{literal}'",
                                         "doc_key": f"concat('{literal}:', doc_id)",
                                         "chunk_id": f"concat('{literal}:', chunk_id)"})
            corpora = tuple(sorted((n, r) for r, n in names.items()))
        else:
            corpora = ()
        self.manifest = dataclasses.replace(self.manifest, format=FORMAT, corpora=corpora)
        self._write_manifest()
        return True

    def require_embedder(self, embedder_id: str) -> None:
        if embedder_id != self.manifest.embedder:
            raise EmbedderMismatchError(
                f"store {self.path} holds vectors of embedder '{self.manifest.embedder}', "
                f"not '{embedder_id}'", hint="use the same embedder or a new --store")

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the single-writer lock; a second writer fails at once with LockedError."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.backing.lock_file()), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise LockedError(f"another ragcli process is writing to {self.path}",
                              hint="try again when it finishes") from None
        try:
            yield
        finally:
            lock.release()

    def at_version(self, version: int) -> Store:
        """A read-only view of this store as it was at ``version``."""
        if not self.remote:
            pinned = Store(self.path, self.manifest)
            pinned._dataset_version = version
            with pinned._reading(gone=version):
                dataset = pinned._lance()
                rows = dataset.to_table(columns=["embedder"], limit=1).to_pylist() \
                    if dataset.count_rows() else []
            if rows:  # the embedder of that version's rows (an in-place rebuild may change it)
                pinned.manifest = dataclasses.replace(self.manifest, embedder=rows[0]["embedder"])
            return pinned
        table = self._db().open_table(TABLE)
        try:
            table.checkout(version)
        except (ValueError, RuntimeError, OSError) as exc:
            raise VersionGoneError(f"store {self.path} no longer has version {version}: "
                                   f"{first_line(exc, 200)}") from None
        # the embedder of that version's rows (an in-place rebuild may have changed it since)
        rows = table.search().select(["embedder"]).limit(1).to_list() if table.count_rows() else []
        embedder = rows[0]["embedder"] if rows else self.manifest.embedder
        pinned = Store(self.path, dataclasses.replace(self.manifest, embedder=embedder))
        pinned._table = table
        return pinned

    def rebuild_since(self, generation: str | None, created_at: str) -> dict[str, Any] | None:
        """The rebuild that put a request (its table ``generation``, or for records older than
        generations, its time) out of reach of this store's table, if there was one."""
        for entry in self.manifest.rebuilds:
            if entry.get("kind") == "in-place":
                continue
            if generation is not None and generation != self.manifest.generation \
                    and entry.get("generation_before") == generation:
                return entry
            if generation is None and str(entry.get("at", "")) > created_at:
                return entry
        if generation is not None and generation != self.manifest.generation:
            return {"at": "unknown", "reason": "the store's table was replaced", "kind": "new-table"}
        return None

    def vectors_for(self, doc_keys: Sequence[str]) -> dict[tuple[str, str], Any]:
        """(doc_key, chunk_hash) -> stored vector, to reuse instead of embedding again."""
        if not doc_keys:
            return {}
        table = self.table()
        found: dict[tuple[str, str], Any] = {}
        for start in range(0, len(doc_keys), 500):
            part = doc_keys[start:start + 500]
            rows = (table.search().where(f"doc_key IN ({_sql_list(part)})")
                    .select(["doc_key", "chunk_hash", "vector"]).limit(1_000_000).to_list())
            for row in rows:
                found[(row["doc_key"], row["chunk_hash"])] = row["vector"]
        return found

    def replace_documents(self, doc_keys: Sequence[str], chunks: Sequence[Chunk],
                          vectors: np.ndarray, *, run_id: str,
                          roots: dict[str, tuple[str, float]]) -> int:
        """Atomically replace every chunk of the documents ``doc_keys`` by ``chunks``; returns the
        new version.

        ``roots`` maps each doc_key with chunks to its (corpus root, source mtime). A doc_key
        without chunks is deleted. One commit: a concurrent reader sees each document all old or
        all new. Must be called under :meth:`writer_lock`.
        """
        import pyarrow as pa

        table = self.table(create=True)
        if not doc_keys:
            return int(table.version)
        now = datetime.now(UTC)
        data = pa.Table.from_pylist([
            {"chunk_id": c.chunk_id, "doc_id": c.doc_id, "ordinal": c.ordinal, "source": c.source,
             "root": roots[c.doc_key][0], "title": c.title, "heading_path": c.heading_path,
             "text": c.text, "search_text": c.search_text, "chunk_hash": c.chunk_hash,
             "doc_hash": c.doc_hash, "acl": list(c.acl), "pages": list(c.pages),
             "mtime": roots[c.doc_key][1], "indexed_at": now, "run_id": run_id,
             "embedder": self.manifest.embedder, "vector": vectors[i].tolist(),
             "corpus": c.corpus, "doc_key": c.doc_key}
            for i, c in enumerate(chunks)
        ], schema=_schema(self.manifest.dim))
        if not chunks:  # deletions only
            table.delete(f"doc_key IN ({_sql_list(doc_keys)})")
            return int(table.version)
        keys = _sql_list(doc_keys)
        (table.merge_insert("chunk_id")
         .when_matched_update_all()
         .when_not_matched_insert_all()
         .when_not_matched_by_source_delete(f"doc_key IN ({keys})")
         .execute(data))
        return int(table.version)

    def refresh_indices(self, retention: timedelta = timedelta(days=7), *,
                        ann_min_rows: int | None = None) -> None:
        """Create, fold new rows into, retrain and clean up the table's indices
        (``indices.refresh_indices``); under the writer lock."""
        indices.refresh_indices(self.table(), self.manifest.dim, retention,
                                ann_min_rows=ann_min_rows, index_state=self.vector_index)

    def vector_index(self, table: Any = None) -> dict[str, Any] | None:
        """The vector index as ``status`` shows it (``indices.vector_index_state``), or None."""
        if table is None:
            reader = self._reader()
            dataset = reader if reader is not None else self.table().to_lance()
        else:
            dataset = table.to_lance()
        with self._reading():
            return indices.vector_index_state(dataset)

    def pin_version(self, version: int) -> None:
        """Tag ``version`` so that cleanup keeps it while an audit record points at it. Safe
        beside searches on other threads (ask --batch's workers share a Store): a local store
        is tagged through a lance handle of its own, one thread at a time, because lance
        refuses to tag through a handle a search is using ("Already borrowed")."""
        with self._pinning:
            if self._reader_possible():
                if self._tagger is None:
                    self._reader()  # opened, and checked, as reads open it
                    self._tagger = import_lance().dataset(str(self._lance_uri()))
                table = self._tagger
            else:
                table = self.table()
            name = f"{PIN_PREFIX}{version}"
            try:
                if name not in table.tags.list():
                    table.tags.create(name, version)
            except (ValueError, RuntimeError, OSError) as exc:
                if "exist" not in str(exc).lower():  # a concurrent ask pinned it first: fine
                    raise StoreError(f"cannot pin store version {version}: {exc}") from None

    def last_run(self) -> dict[str, Any] | None:
        try:
            text = self.backing.read("last_run")
            run: dict[str, Any] | None = json.loads(text) if text else None
            return run
        except (OSError, ValueError, StoreError):
            return None

    def record_run(self, summary: dict[str, Any]) -> None:
        self.backing.write("last_run", json.dumps(summary, indent=2) + "\n")

    def disk_bytes(self) -> int | None:
        """Bytes on local disk (None for object storage: listing a bucket is not free)."""
        return self.backing.disk_bytes()
