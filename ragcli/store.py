"""The only module that talks to LanceDB: schema, writes, indices, search, versions.

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
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import (
    EmbedderMismatchError,
    LockedError,
    StoreError,
    StoreMissingError,
    VersionGoneError,
    first_line,
)
from .ids import new_id
from .models import Chunk

if TYPE_CHECKING:
    import numpy as np

FORMAT = 3  # 2: root, pages and mtime columns; 3: corpus and doc_key (Store.migrate)
TABLE = "chunks"
MANIFEST = "ragcli.json"
LAST_RUN = "last_run.json"
_COLUMNS = ["chunk_id", "doc_id", "ordinal", "source", "root", "title", "heading_path", "text",
            "chunk_hash", "doc_hash", "acl", "pages", "mtime", "indexed_at", "run_id", "embedder",
            "corpus", "doc_key"]
_HIT_COLUMNS = ["chunk_id", "doc_id", "source", "title", "heading_path", "text", "chunk_hash", "acl",
                "corpus"]  # what a search returns: what retrieval.Hit holds, nothing more
PIN_PREFIX = "audit-v"  # tag of a table version an audit record points at
_NEVER = timedelta(days=365 * 100)  # optimize() without its own version cleanup
VECTOR_INDEX = "vector_idx"
ANN_MIN_ROWS = 50_000
"""A store with at least this many chunks gets a vector (ANN) index at the end of ingest/reindex;
below it lance's vector leg is a flat scan (exact; ~20-25 ms warm at SciFact's 12.6 k chunks,
where the indexed 100 k store takes 13-18 ms: a lower size was not measured). A warm process
holding the vectors (``HOLD_MAX_ROWS``) searches them in memory instead. docs/scaling.md."""
ANN_TYPE = "IVF_PQ"  # chosen over IVF_HNSW_SQ by scripts/bench_ann.py (docs/scaling.md)
ANN_NPROBES = 32  # IVF partitions searched at least: recall@10 0.974 of the flat scan at 1 M chunks
ANN_REFINE = 10  # re-rank limit x 10 candidates by their exact vectors: distances are exact
ANN_RETRAIN_GROWTH = 0.5  # retrain once the rows added since training exceed half those trained on
HOLD_MAX_ROWS = 200_000  # the default of the hold_max_rows setting
"""A warm process (``chat``, ``ask --batch``) keeps the vectors and hit columns of the table
version it reads in memory up to this many chunks (300 MB of vectors at 384 dimensions, and the
texts) and searches them exactly there (``HeldVectors``); above it the vector leg goes through
lance (the vector index past ``ANN_MIN_ROWS``). docs/performance.md."""
META = "ragcli_meta"  # manifest and last run of a store in object storage
URI_SCHEMES = ("s3", "s3+ddb", "gs", "az", "abfs", "abfss")
_URI = re.compile(r"^([a-z][a-z0-9+.-]*)://")


def is_uri(location: object) -> bool:
    """True for an object-storage store location such as ``s3://bucket/prefix``."""
    return isinstance(location, str) and _URI.match(location) is not None


def check_uri(location: str) -> str:
    """``location`` if it is an object-storage URI ragcli can use, else a one-line error."""
    match = _URI.match(location)
    scheme = match.group(1) if match else ""
    if scheme not in URI_SCHEMES or not location[len(scheme) + 3:].split("/")[0]:
        raise ValueError(f"{location!r} is not a store directory or an "
                         f"{', '.join(s + '://' for s in URI_SCHEMES[:4])} URI with a bucket")
    return location.rstrip("/")


def _sql_list(values: Sequence[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def acl_filter(groups: Sequence[str]) -> str:
    """SQL prefilter that admits rows readable by any of ``groups``."""
    quoted = ", ".join("'" + g.replace("'", "''") + "'" for g in sorted(set(groups)))
    return f"array_has_any(acl, [{quoted}])"


@dataclass(frozen=True)
class Manifest:
    embedder: str
    dim: int
    created_at: str
    format: int = FORMAT
    generation: str = ""  # id of the chunks table's lineage: new only when a rebuild must drop it
    rebuilds: tuple[dict[str, Any], ...] = ()  # every rebuild: when, why, kind, versions
    corpora: tuple[tuple[str, str], ...] = ()  # (name, root) of every corpus (sources.Corpora)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "rebuilds": list(self.rebuilds), "corpora": dict(self.corpora)}


def _schema(dim: int) -> Any:
    import pyarrow as pa

    return pa.schema([
        ("chunk_id", pa.string()),
        ("doc_id", pa.string()),
        ("ordinal", pa.int32()),
        ("source", pa.string()),
        ("root", pa.string()),
        ("title", pa.string()),
        ("heading_path", pa.string()),
        ("text", pa.string()),
        ("search_text", pa.string()),
        ("chunk_hash", pa.string()),
        ("doc_hash", pa.string()),
        ("acl", pa.list_(pa.string())),
        ("pages", pa.list_(pa.int32())),
        ("mtime", pa.float64()),
        ("indexed_at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("embedder", pa.string()),
        ("vector", pa.list_(pa.float32(), dim)),
        ("corpus", pa.string()),
        ("doc_key", pa.string()),
    ])


_READER_PROCESS = False


def reader_process() -> None:
    """Declare this process a reader that hands no pandas objects to pyarrow (the CLI's ``ask``
    and ``chat`` processes, cli.app.main): lance is then imported without pandas
    (``import_lance``)."""
    global _READER_PROCESS
    _READER_PROCESS = True


class _NoPandas:
    """A meta path finder that makes ``import pandas`` fail (import_lance)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not imported by a reader process", name=name)


def import_lance() -> Any:
    """``import lance``; in a reader process (``reader_process``) without importing pandas.

    pyarrow.dataset, which lance imports, imports pandas as it starts (0.45 s of a 2.7 s cold
    ``ask`` on 2 cores) though retrieval never uses it. Kept out, pyarrow treats pandas as absent
    for the rest of the process (a pandas Series given to ``pyarrow.array`` would convert as a
    plain sequence; ``to_pandas`` still imports it), which is why only the CLI's query commands
    ask for it, not ``eval`` (ragas hands pandas data to pyarrow) or a library caller. lance
    itself looks for pandas lazily and still finds it."""
    if _READER_PROCESS and "pyarrow.dataset" not in sys.modules and "pandas" not in sys.modules:
        blocker = _NoPandas()
        sys.meta_path.insert(0, blocker)
        try:
            import pyarrow.dataset  # noqa: F401 - its import is the point
        finally:
            sys.meta_path.remove(blocker)
    import lance

    return lance


class _Directory:
    """Where a store's own files live when it is a local directory: the manifest and the last
    run as JSON files beside the LanceDB data, the writer lock in it. (The one other place a
    directory differs from object storage is reading: a local table is read through lance
    itself, see ``Store._reader``.)"""

    remote = False
    _FILES = {"manifest": MANIFEST, "last_run": LAST_RUN}

    def __init__(self, path: Path) -> None:
        self.path = path

    def where(self, key: str) -> str:
        return str(self.path / self._FILES[key])

    def read(self, key: str) -> str | None:
        file = self.path / self._FILES[key]
        return file.read_text(encoding="utf-8") if file.is_file() else None

    def write(self, key: str, text: str) -> None:
        """Whole or not at all: a temporary file renamed into place, owner-only."""
        try:
            tmp = self.path / (self._FILES[key] + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path / self._FILES[key])
        except OSError as exc:
            raise StoreError(f"cannot write store {key} in {self.path}: {exc}") from None

    def create(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store path {self.path} exists and is not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"cannot create store at {self.path}: {exc.strerror or exc}") from None

    def lock_file(self) -> Path:
        return self.path / "writer.lock"

    def disk_bytes(self) -> int | None:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


class _ObjectStorage:
    """Where a store's own files live in object storage (``s3://``, ``gs://``, ``az://``): the
    manifest and last run as rows of a small LanceDB table (one commit each), the writer lock on
    the one writing host (docs/scaling.md)."""

    remote = True

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def where(self, key: str) -> str:
        return f"{self.uri}/{META}"

    def read(self, key: str) -> str | None:
        return _read_meta(self.uri, key)

    def write(self, key: str, text: str) -> None:
        db = _connect(self.uri)
        rows = _meta_rows(db)
        exists = bool(rows) or META in db.list_tables().tables
        rows[key] = text
        data = [{"key": k, "value": v} for k, v in sorted(rows.items())]
        try:  # overwriting is one new table version; creating says nothing about a missing table
            db.create_table(META, data=data, mode="overwrite" if exists else "create")
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"cannot write to store {self.uri}: {first_line(exc)}") from None

    def create(self) -> None:
        pass  # a prefix exists once something is written under it

    def lock_file(self) -> Path:
        from .paths import lock_dir

        locks = lock_dir()
        locks.mkdir(parents=True, exist_ok=True, mode=0o700)
        return locks / (hashlib.sha256(self.uri.encode()).hexdigest()[:16] + ".lock")

    def disk_bytes(self) -> int | None:
        return None  # listing a bucket is not free


def _backing(path: Path | str) -> _Directory | _ObjectStorage:
    """The seam between a directory and object storage (every difference but reading)."""
    return _ObjectStorage(str(path)) if is_uri(path) else _Directory(Path(path))


class Store:
    """A ragcli store on disk. Open it with :meth:`open` (read) or :meth:`open_or_create`."""

    def __init__(self, path: Path | str, manifest: Manifest) -> None:
        self.path = path  # a directory, or an object-storage URI (is_uri)
        self.backing = _backing(path)
        self.remote = self.backing.remote
        self.manifest = manifest
        self._table: Any = None
        self._dataset: Any = None  # the table read through lance itself (local stores)
        self._opening = threading.Lock()  # the two search legs may open it at once
        self._pinning = threading.Lock()  # pin_version, one thread at a time
        self._tagger: Any = None  # a lance handle pin_version tags through (local stores)
        self._dataset_version: int | None = None  # a pinned view (at_version), local
        self.held: HeldVectors | None = None  # the vector leg in memory (hold_vectors)

    # ---- opening -------------------------------------------------------------------------
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
        from .sources import corpus_name

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

    def has_table(self) -> bool:
        try:
            if self._reader_possible():
                self._lance()  # no lancedb import (1.2 s) for a reader or a writer with no work
            else:
                self.table()
        except StoreMissingError:
            return False
        return True

    def _reader_possible(self) -> bool:
        """Whether reads can go through lance itself (``_reader``) without opening it yet."""
        return not self.remote and self._table is None

    def require_current(self) -> None:
        """Readers need the current table layout; an older store is rebuilt by ``reindex``."""
        if self.manifest.format != FORMAT:
            raise StoreError(f"store {self.path} has format {self.manifest.format}, this ragcli "
                             f"reads format {FORMAT}",
                             hint="'ragcli reindex PATH' on its sources migrates it (format 2: "
                                  "without embedding anything)")

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

    # ---- the table -----------------------------------------------------------------------
    def _db(self) -> Any:
        return _connect(self.path)

    def table(self, *, create: bool = False) -> Any:
        if self._table is None:
            self.require_current()
            db = self._db()
            try:
                table = db.open_table(TABLE)
            except (ValueError, FileNotFoundError):
                if not create:
                    raise StoreMissingError(f"store {self.path} is empty",
                                            hint="run 'ragcli ingest PATH' first") from None
                self._table = db.create_table(TABLE, schema=_schema(self.manifest.dim))
            except OSError as exc:
                raise StoreError(f"cannot open store {self.path}: {exc}") from None
            else:
                if self._dataset_version is not None:  # a view pinned by at_version
                    with self._reading(gone=self._dataset_version):
                        table.checkout(self._dataset_version)
                self._table = table
        return self._table

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

    def rows(self, chunk_ids: Sequence[str], columns: Sequence[str]) -> dict[str, dict[str, Any]]:
        """chunk_id -> row for the given chunks, whoever may read them (for audit diffs only).
        Through lance itself where reads go that way (replay's drift check: no lancedb import)."""
        if not chunk_ids:
            return {}
        where = f"chunk_id IN ({_sql_list(chunk_ids)})"
        reader = self._reader()
        if reader is not None:
            with self._reading():
                rows: list[dict[str, Any]] = reader.to_table(
                    columns=["chunk_id", *columns], filter=where).to_pylist()
        else:
            rows = (self.table().search().where(where).select(["chunk_id", *columns])
                    .limit(len(chunk_ids)).to_list())
        return {r["chunk_id"]: r for r in rows}

    @property
    def version(self) -> int:
        reader = self._reader()
        return int(reader.version if reader is not None else self.table().version)

    def count_chunks(self) -> int:
        """The rows of the version read, through lance itself where reads go that way: opening
        the lancedb table would send every later search of this Store through lancedb."""
        reader = self._reader()
        if reader is not None:
            with self._reading():
                return int(reader.count_rows())
        return int(self.table().count_rows())

    def scan(self, columns: Sequence[str]) -> list[dict[str, Any]]:
        """Every row, only the named columns (no vectors unless asked)."""
        reader = self._reader()
        if reader is not None:  # what a reindex with nothing to do reads: no lancedb import
            with self._reading():
                found: list[dict[str, Any]] = reader.to_table(columns=list(columns)).to_pylist()
            return found
        table = self.table()
        total = table.count_rows()
        if total == 0:
            return []
        rows: list[dict[str, Any]] = table.search().select(list(columns)).limit(total).to_list()
        return rows

    def documents(self) -> dict[str, dict[str, Any]]:
        """doc_key -> {corpus, doc_id, doc_hash, acl, source, root, mtime, chunks} for every
        indexed document."""
        docs: dict[str, dict[str, Any]] = {}
        for row in self.scan(["doc_key", "corpus", "doc_id", "doc_hash", "acl", "source", "root",
                              "mtime"]):
            entry = docs.setdefault(row["doc_key"], {"corpus": row["corpus"],
                                                     "doc_id": row["doc_id"],
                                                     "doc_hash": row["doc_hash"],
                                                     "acl": tuple(row["acl"]),
                                                     "source": row["source"], "root": row["root"],
                                                     "mtime": row["mtime"], "chunks": 0})
            entry["chunks"] += 1
        return docs

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

    # ---- writing -------------------------------------------------------------------------
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
        """Create the FTS and ACL indices on first use, and the vector index once the table
        holds ``ann_min_rows`` chunks; afterwards fold new rows into them, retrain the vector
        index when the table outgrew what it was trained on (``ANN_RETRAIN_GROWTH``), compact
        small files, and remove versions older than ``retention`` that no audit record pins
        (pinned versions carry a tag, and LanceDB's cleanup never removes a tagged one)."""
        from lancedb.index import FTS, LabelList

        ann_min_rows = ANN_MIN_ROWS if ann_min_rows is None else ann_min_rows
        table = self.table()
        names = {ix.name for ix in table.list_indices()}
        if "search_text_idx" not in names:
            table.create_index("search_text", config=FTS())
        if "acl_idx" not in names:
            table.create_index("acl", config=LabelList())
        if names >= {"search_text_idx", "acl_idx"}:
            # compact and fold new rows into the indices (the vector index gets a delta with the
            # new rows, in its trained partitions); no cleanup here, because lancedb's optimize
            # refuses to run once a tagged (pinned) version is older than its window
            table.optimize(cleanup_older_than=_NEVER)
        state = self.vector_index(table)
        if (state is None and table.count_rows() >= ann_min_rows) or \
                (state is not None and state["needs_retraining"]):
            self._build_vector_index(table)
        if names >= {"search_text_idx", "acl_idx"}:
            table.to_lance().cleanup_old_versions(older_than=retention,
                                                  error_if_tagged_old_versions=False)

    def _build_vector_index(self, table: Any) -> None:
        """Train the ``ANN_TYPE`` index on every row now in the table (a new index replaces
        the old one in one commit: a reader sees either, never neither)."""
        from lancedb.index import HnswSq, IvfPq

        if ANN_TYPE == "IVF_HNSW_SQ":  # the alternative scripts/bench_ann.py --index measures
            config: Any = HnswSq(distance_type="cosine")
        else:  # PQ codes of dim/8 bytes, at most 48 (384 dimensions -> 48 sub-vectors of 8)
            sub_vectors = max(d for d in range(1, 49) if self.manifest.dim % d == 0)
            config = IvfPq(distance_type="cosine", num_sub_vectors=sub_vectors)
        table.create_index("vector", config=config, name=VECTOR_INDEX, replace=True)

    def vector_index(self, table: Any = None) -> dict[str, Any] | None:
        """The vector index as ``status`` shows it, or None while the vector leg is a flat scan:
        its type, the rows it covers and those it does not (searched flat until the next
        ingest/reindex folds them in), the rows it was trained on, and whether the next
        ingest/reindex retrains it."""
        if table is None:
            reader = self._reader()
            dataset = reader if reader is not None else self.table().to_lance()
        else:
            dataset = table.to_lance()
        if VECTOR_INDEX not in _index_names(dataset):
            return None
        os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")
        with self._reading():
            stats = dataset.stats.index_stats(VECTOR_INDEX)
        per_delta = list(stats.get("num_indexed_rows_per_delta") or [stats["num_indexed_rows"]])
        trained = int(per_delta[0])
        indexed, unindexed = int(stats["num_indexed_rows"]), int(stats["num_unindexed_rows"])
        retrain_at = int(trained * (1 + ANN_RETRAIN_GROWTH))
        return {"type": str(stats["index_type"]), "indexed_rows": indexed,
                "unindexed_rows": unindexed, "trained_rows": trained,
                "deltas": len(per_delta), "retrain_at_rows": retrain_at,
                "needs_retraining": indexed + unindexed > retrain_at}

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

    # ---- searching -----------------------------------------------------------------------
    def search_vector(self, vector: np.ndarray, groups: Sequence[str], limit: int, *,
                      exact: bool = False, ids_only: bool = False) -> list[dict[str, Any]]:
        """The ``limit`` rows nearest to ``vector`` that ``groups`` may read, with their cosine
        ``_distance`` and without their vectors. Through the vector index when the store has one
        (``exact`` forces the flat scan, as benchmarks compare); its candidates are re-ranked by
        their exact vectors, so ``_distance`` is exact either way. ``ids_only`` (a local store,
        ``lazy_rows``): ``chunk_id``, ``_distance`` and ``_rowid`` only; ``take_rows`` reads the
        rest of the few hits retrieval keeps."""
        with self._reading():
            reader = self._reader()
            if reader is not None:
                nearest: dict[str, Any] = {"column": "vector", "q": vector, "k": limit,
                                           "metric": "cosine"}
                nearest.update({"use_index": False} if exact else
                               {"nprobes": ANN_NPROBES, "refine_factor": ANN_REFINE})
                columns = ["chunk_id"] if ids_only else self._columns()
                return self._rows(reader.to_table(
                    nearest=nearest, filter=acl_filter(groups), prefilter=True,
                    columns=[*columns, "_distance"], with_row_id=ids_only))
            query = (self.table().search(vector, vector_column_name="vector")
                     .distance_type("cosine").where(acl_filter(groups), prefilter=True))
            query = query.bypass_vector_index() if exact else \
                query.nprobes(ANN_NPROBES).refine_factor(ANN_REFINE)
            return self._rows(query.select([*self._columns(), "_distance"]).limit(limit)
                              .to_arrow())

    @property
    def lazy_rows(self) -> bool:
        """Whether searches can return ids and row ids only (``ids_only``) and ``take_rows`` the
        rest: a local store read through lance (``_reader``)."""
        return self._reader_possible()

    def take_rows(self, row_ids: Sequence[int], *, vectors: bool = False) -> list[dict[str, Any]]:
        """The hit columns (or, with ``vectors``, ``chunk_id`` and ``vector``) of rows an
        ``ids_only`` search of this same version returned (their ``_rowid``)."""
        if not row_ids:
            return []
        with self._reading():  # lance has no public take by row id (``take`` wants offsets)
            return self._rows(self._lance()._take_rows(
                list(row_ids), columns=["chunk_id", "vector"] if vectors else self._columns()))

    def hold_vectors(self, max_rows: int | None = None, *, any_size: bool = False) -> bool:
        """Read this version's vectors and hit columns into memory for the vector leg
        (``HeldVectors``), unless it has more than ``max_rows`` chunks (the ``hold_max_rows``
        setting; None: ``HOLD_MAX_ROWS``; 0: never; ``any_size``: as replay does for a request
        that was searched that way) or is not a local store. True when held. A store that is
        empty, unreadable or damaged is not held either: it is then searched through lance,
        whose searches say what is wrong with it (chat and batches go on as before)."""
        if self.held is not None:
            return True
        try:
            with self._reading():
                reader = self._reader()
                if reader is None or (not any_size and not holds(reader.count_rows(), max_rows)):
                    return False
                self.held = HeldVectors(reader, self.path, self._columns())
        except (StoreError, StoreMissingError):
            return False
        return True

    def fetch(self, chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The hit columns of held rows (``hold_vectors``), by chunk id."""
        if self.held is None or not chunk_ids:
            return {}
        return self.held.rows(chunk_ids)

    def search_fts(self, text: str, groups: Sequence[str], limit: int, *,
                   ids_only: bool = False) -> list[dict[str, Any]]:
        """The ``limit`` best BM25 matches of ``text`` that ``groups`` may read, with ``_score``
        and their vectors (numpy rows: retrieval needs the cosine of those the vector leg did
        not return). ``ids_only`` (held vectors, or ``lazy_rows``): ``chunk_id``, ``_score`` and
        ``_rowid`` only, the rest of those retrieval keeps read afterwards (half the time of the
        leg)."""
        if not any(ch.isalnum() for ch in text):
            return []
        with self._reading():
            reader = self._reader()
            if reader is not None:
                from lance.query import MatchQuery as LanceMatch

                columns = ["chunk_id"] if ids_only else [*self._columns(), "vector"]
                return self._rows(reader.to_table(
                    full_text_query=LanceMatch(text, "search_text"), filter=acl_filter(groups),
                    prefilter=True, columns=[*columns, "_score"], limit=limit,
                    with_row_id=ids_only))
            from lancedb.query import MatchQuery

            # MatchQuery is a pydantic model: its defaulted fields look required to mypy
            query = MatchQuery(text, "search_text")  # type: ignore[call-arg]
            return self._rows(self.table().search(query, query_type="fts")
                              .where(acl_filter(groups), prefilter=True)
                              .select([*self._columns(), "vector", "_score"])
                              .limit(limit).to_arrow())

    def _columns(self) -> list[str]:
        """The columns of a hit this table (or the version checked out, maybe an older format)
        has."""
        reader = self._reader()
        names = set((reader if reader is not None else self.table()).schema.names)
        return [c for c in _HIT_COLUMNS if c in names]

    def _rows(self, found: Any) -> list[dict[str, Any]]:
        """Search results (an Arrow table) as dicts, vectors as numpy rows converted by Arrow.

        LanceDB has no checksums: a damaged data file can read back as NaN vectors without any
        error. A search that meets one (a non-finite vector or distance) fails rather than
        ranking garbage."""
        import numpy as np

        vectors = None
        if "vector" in found.column_names:
            column = found.column("vector").combine_chunks()
            vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(
                len(column), column.type.list_size)
            found = found.drop_columns(["vector"])
        damaged = vectors is not None and not np.isfinite(vectors).all()
        if "_distance" in found.column_names:
            damaged = damaged or not np.isfinite(
                found.column("_distance").to_numpy(zero_copy_only=False)).all()
        if damaged:
            raise StoreError(f"store {self.path} is damaged: a search returned non-finite vectors",
                             hint="run 'ragcli status --verify', then 'ragcli reindex --rebuild PATHS'")
        rows: list[dict[str, Any]] = found.to_pylist()
        if vectors is not None:
            for row, vector in zip(rows, vectors, strict=True):
                row["vector"] = vector
        return rows

    def _reader(self) -> Any:
        """The table as a lance dataset, for reading a local store: the query path goes through
        lance itself, because ``import lancedb`` costs 1.8-2.7 s on 2 cores (its REST namespace
        client and pydantic models) and ``import lance`` 0.7-0.9 s; lancedb's searches call the
        same lance scanner with the same arguments (tests/test_store_and_ingest.py compares them).
        None (use the lancedb table) for object storage and once a writer opened the table."""
        return self._lance() if self._reader_possible() else None

    def _lance(self) -> Any:
        with self._opening:
            return self._open_lance()

    def _lance_uri(self) -> Path:
        """The table's lance dataset directory (a local store)."""
        return Path(self.path) / "lancedb" / f"{TABLE}.lance"

    def _open_lance(self) -> Any:
        if self._dataset is None:
            self.require_current()
            lance = import_lance()

            uri = self._lance_uri()
            if not uri.is_dir():
                raise StoreMissingError(f"store {self.path} is empty",
                                        hint="run 'ragcli ingest PATH' first")
            try:
                self._dataset = lance.dataset(str(uri), version=self._dataset_version)
            except (ValueError, RuntimeError, OSError) as exc:
                if self._dataset_version is not None:
                    raise VersionGoneError(f"store {self.path} no longer has version "
                                           f"{self._dataset_version}: {first_line(exc, 200)}") from None
                raise StoreError(f"cannot open store {self.path}: {first_line(exc)}") from None
        return self._dataset

    @contextmanager
    def _reading(self, gone: int | None = None) -> Iterator[None]:
        """LanceDB reports missing or damaged data files as assorted exceptions: one StoreError
        (VersionGoneError when ``gone``, the version being opened, is what is missing)."""
        try:
            yield
        except (StoreError, StoreMissingError, VersionGoneError):
            raise
        except (OSError, RuntimeError, ValueError) as exc:
            if gone is not None:
                raise VersionGoneError(f"store {self.path} no longer has version {gone}: "
                                       f"{first_line(exc, 200)}") from None
            raise StoreError(f"store {self.path} cannot be read: {first_line(exc)}",
                             hint="check it with 'ragcli status --verify'; repair it with "
                                  "'ragcli reindex --rebuild PATHS'") from None


def hold_limit(max_rows: int | None = None) -> int:
    """The most chunks a warm process holds under the ``hold_max_rows`` setting ``max_rows``
    (None: ``HOLD_MAX_ROWS``; 0: never)."""
    return HOLD_MAX_ROWS if max_rows is None else max_rows


def holds(rows: int, max_rows: int | None = None) -> bool:
    """Whether a warm process holds a local store of ``rows`` chunks in memory under the
    ``hold_max_rows`` setting ``max_rows`` (``hold_limit``)."""
    limit = hold_limit(max_rows)
    return 0 < limit and rows <= limit


_HOLD_MAX_THREADS = 4  # slices of the held product at once, at most (one per usable core)
_HOLD_THREADS: int | None = None  # None: the usable cores, up to _HOLD_MAX_THREADS (tests set it)
_HOLD_SPLIT_ROWS = 20_000  # below this a thread hand-off costs more than it saves
_HOLD_POOL: Any = None


def _hold_pool() -> Any:
    global _HOLD_POOL
    if _HOLD_POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _HOLD_POOL = ThreadPoolExecutor(max_workers=_HOLD_MAX_THREADS - 1,
                                        thread_name_prefix="ragcli-held")
    return _HOLD_POOL


class HeldVectors:
    """The vectors and hit columns of one table version, read once by a warm process: the vector
    leg as an exact cosine product in numpy (a fixed summation order per row) under the same
    ACL prefilter, instead of lance's flat scan (about 20 ms at 12.6 k chunks, most of it the
    ``array_has_any`` filter and the late fetch of the columns), and the columns of the few hits
    retrieval keeps taken from memory (Arrow) instead of a ``take`` per column from disk.
    Its cosines differ from lance's by ~1e-7 (another summation order), so an audit record says
    which path searched (``vector_leg``) and ``replay`` takes the same one.

    The rows are held grouped by their ACL (rows with the same labels next to each other; the
    scan order within a group): the rows one set of groups may read are then a few runs of the
    matrix, and only those are multiplied (at 100 k chunks of which a caller reads 39 %, 39 % of
    the work). The grouping is a layout only: which rows are readable is always decided from the
    labels themselves (``readable``), and ties are broken by the scan order (``original``)."""

    _MAX_RUNS = 256  # more runs than this (ACLs scattered over many label sets): the whole matrix

    def __init__(self, dataset: Any, path: Path | str, columns: Sequence[str]) -> None:
        import numpy as np
        import pyarrow.compute as pc

        table = dataset.to_table(columns=[*columns, "vector"], scan_in_order=True)
        # a layout key only (two label lists could join to one string: that merely places them
        # together; the readable rows never come from this key)
        joined = pc.fill_null(pc.binary_join(table.column("acl"), "\x1f"), "")
        codes = pc.dictionary_encode(joined).combine_chunks().indices.to_numpy()
        order = np.argsort(codes, kind="stable")
        grouped = bool((order[1:] > order[:-1]).all())  # already grouped (one ACL, say): no copy
        # the vectors (and the ids) in the grouped order; the hit columns stay in scan order
        self.original = order  # held row -> its scan-order offset: ties go by it
        # one copy, chunk by chunk into place (each fresh 150 MB costs ~0.5 s of page faults)
        column = table.column("vector")
        rows, dim = len(column), column.type.list_size
        if not grouped:
            where = np.empty(rows, dtype=np.int64)
            where[order] = np.arange(rows)  # scan offset -> held row
        self.vectors = np.empty((rows, dim), dtype=np.float32)
        start = 0
        for chunk in column.chunks:
            values = chunk.flatten().to_numpy(zero_copy_only=False).reshape(len(chunk), dim)
            end = start + len(chunk)
            if grouped:
                self.vectors[start:end] = values
            else:
                self.vectors[where[start:end]] = values
            start = end
        del column
        if not np.isfinite(self.vectors).all():
            raise StoreError(f"store {path} is damaged: it holds non-finite vectors",
                             hint="run 'ragcli status --verify', then 'ragcli reindex --rebuild PATHS'")
        self.columns = table.drop_columns(["vector"]).combine_chunks()
        scanned: list[str] = self.columns.column("chunk_id").to_pylist()
        self.chunk_ids: list[str] = scanned if grouped else [scanned[n] for n in order.tolist()]
        self.offsets = {chunk_id: n for n, chunk_id in enumerate(self.chunk_ids)}
        self._acl = self.columns.column("acl").combine_chunks()
        self._views: dict[tuple[str, ...], tuple[Any, Any, Any]] = {}
        self._lock = threading.Lock()

    def rows(self, chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The hit columns of these held rows, by chunk id."""
        offsets = sorted({int(self.original[self.offsets[c]]) for c in chunk_ids})
        return {r["chunk_id"]: r for r in self.columns.take(offsets).to_pylist()}

    def _view(self, groups: Sequence[str]) -> tuple[Any, Any, Any]:
        """(mask, positions, runs) of the rows ``groups`` may read: a boolean row mask (the
        rows whose ACL holds any of ``groups``, ``acl_filter``), its true positions, and its
        runs as [start, end) pairs. The last eight group sets are kept."""
        key = tuple(sorted(set(groups)))
        with self._lock:
            view = self._views.get(key)
            if view is None:
                import numpy as np
                import pyarrow as pa
                import pyarrow.compute as pc

                labels = self._acl.flatten()
                owner = pc.list_parent_indices(self._acl).to_numpy(zero_copy_only=False)
                match = pc.is_in(labels, value_set=pa.array(key, pa.string())) \
                    .to_numpy(zero_copy_only=False)
                scanned = np.zeros(len(self.chunk_ids), dtype=bool)  # in scan order
                scanned[owner[match]] = True
                mask = scanned[self.original]  # in held order
                mask.flags.writeable = False
                edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
                view = (mask, np.flatnonzero(mask), edges.reshape(-1, 2))
                self._views = {**dict(list(self._views.items())[-7:]), key: view}
            return view

    def readable(self, groups: Sequence[str]) -> Any:
        """A boolean row mask: the rows whose ACL holds any of ``groups`` (``acl_filter``)."""
        return self._view(groups)[0]

    def similarities(self, vector: np.ndarray, groups: Sequence[str] | None = None) -> np.ndarray:
        """The cosine to ``vector`` of every held row ``groups`` may read (rows and query are
        L2-normalised; the others are NaN), or of every row when ``groups`` is None.

        ``einsum`` computes each row's dot product in one fixed order whatever slice of the
        matrix it is given (tested bitwise), so the readable runs are cut into slices that run
        on threads (it releases the GIL): the same numbers on any number of cores and whichever
        rows are readable, 3.3 instead of 5.5 ms for 100 k rows on 2 cores."""
        import numpy as np

        from .generation import usable_cores

        query = np.asarray(vector, dtype=np.float32)
        rows = len(self.vectors)
        runs = [(0, rows)]
        if groups is not None:
            found = self._view(groups)[2]
            if len(found) <= self._MAX_RUNS:
                runs = [(int(lo), int(hi)) for lo, hi in found]
        out = np.full(rows, np.nan, dtype=np.float32)
        total = sum(hi - lo for lo, hi in runs)
        parts = 1 if total < _HOLD_SPLIT_ROWS else \
            min(_HOLD_THREADS or usable_cores(_HOLD_MAX_THREADS), _HOLD_MAX_THREADS)

        def part(pieces: list[tuple[int, int]]) -> None:
            for lo, hi in pieces:
                np.einsum("ij,j->i", self.vectors[lo:hi], query, out=out[lo:hi])

        slices = _cut(runs, parts)
        pending = [_hold_pool().submit(part, pieces) for pieces in slices[1:]]
        part(slices[0])
        for future in pending:
            future.result()
        return out

    def nearest(self, similarities: np.ndarray, groups: Sequence[str],
                limit: int) -> list[tuple[int, float]]:
        """(row, cosine) of the ``limit`` most similar rows ``groups`` may read, best first
        (ties by scan order)."""
        import numpy as np

        readable = self._view(groups)[1]
        if limit <= 0 or not len(readable):
            return []
        scores = similarities[readable]
        if len(readable) > limit:  # the best, and of rows tied at the cut the first scanned
            cut = -np.partition(-scores, limit - 1)[limit - 1]
            above = np.flatnonzero(scores > cut)
            tied = np.flatnonzero(scores == cut)
            tied = tied[np.argsort(self.original[readable[tied]], kind="stable")]
            top = np.concatenate([above, tied[:limit - len(above)]])
        else:
            top = np.arange(len(readable))
        top = top[np.lexsort((self.original[readable[top]], -scores[top]))]
        return [(int(readable[n]), float(scores[n])) for n in top]


def _cut(runs: Sequence[tuple[int, int]], parts: int) -> list[list[tuple[int, int]]]:
    """``runs`` ([start, end) row ranges) cut into ``parts`` lists of about as many rows each."""
    total = sum(hi - lo for lo, hi in runs)
    out: list[list[tuple[int, int]]] = [[] for _ in range(max(1, parts))]
    bounds = [total * k // len(out) for k in range(1, len(out) + 1)]
    done, k = 0, 0
    for lo, hi in runs:
        while lo < hi:
            take = min(hi - lo, bounds[k] - done)
            if take > 0:
                out[k].append((lo, lo + take))
                lo += take
                done += take
            if done >= bounds[k] and k < len(out) - 1:
                k += 1
    return out


def _index_names(dataset: Any) -> set[str]:
    """The names of a lance dataset's indices."""
    return {ix.name for ix in dataset.describe_indices()}


def _connect(location: Path | str) -> Any:
    import lancedb

    if is_uri(location):
        try:
            return lancedb.connect(f"{location}/lancedb")
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"cannot open store {location}: {first_line(exc)}",
                             hint="check the URI and the credentials in the environment "
                                  "(docs/scaling.md: Object storage)") from None
    return lancedb.connect(str(Path(location) / "lancedb"))


def _meta_rows(db: Any) -> dict[str, str]:
    try:
        if META not in db.list_tables().tables:
            return {}
        return {r["key"]: r["value"] for r in db.open_table(META).to_arrow().to_pylist()}
    except (OSError, RuntimeError, ValueError) as exc:
        raise StoreError(f"cannot read store metadata: {first_line(exc)}",
                         hint="check the URI and the credentials in the environment "
                              "(docs/scaling.md: Object storage)") from None


def _read_meta(location: str, key: str) -> str | None:
    return _meta_rows(_connect(location)).get(key)
