"""The vector leg of a warm process in memory: a table version's vectors and hit columns held
once (``chat``, ``ask --batch``) and searched exactly, sliced over the usable cores."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cpu import usable_cores
from ..errors import StoreError

if TYPE_CHECKING:
    import numpy as np

HOLD_MAX_ROWS = 200_000  # the default of the hold_max_rows setting
"""A warm process (``chat``, ``ask --batch``) keeps the vectors and hit columns of the table
version it reads in memory up to this many chunks (300 MB of vectors at 384 dimensions, and the
texts) and searches them exactly there (``HeldVectors``); above it the vector leg goes through
lance (the vector index past ``ANN_MIN_ROWS``). docs/performance.md."""


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
