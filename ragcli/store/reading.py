"""Reading one version of a store's chunks table: its rows, and the two search legs with the ACL
prefilter inside each. A local table is read through lance itself (no lancedb import on the query
path); object storage, and a table a writer opened, through lancedb. ``Store`` adds opening,
writing, pinning and maintenance on top."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StoreError, StoreMissingError, VersionGoneError, first_line
from .backings import _backing, _connect, import_lance
from .held import HeldVectors, holds
from .indices import ANN_NPROBES, ANN_REFINE
from .table import _HIT_COLUMNS, FORMAT, TABLE, Manifest, _schema, _sql_list, acl_filter

if TYPE_CHECKING:
    import numpy as np


class TableReader:
    """A store's chunks table as readers see it (one version: the current one, or a pinned view)."""

    def __init__(self, path: Path | str, manifest: Manifest) -> None:
        self.path = path  # a directory, or an object-storage URI (is_uri)
        self.backing = _backing(path)
        self.remote = self.backing.remote
        self.manifest = manifest
        self._table: Any = None
        self._dataset: Any = None  # the table read through lance itself (local stores)
        self._opening = threading.Lock()  # the two search legs may open it at once
        self._dataset_version: int | None = None  # a pinned view (at_version), local
        self.held: HeldVectors | None = None  # the vector leg in memory (hold_vectors)

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
