"""Index maintenance of the chunks table: the FTS and ACL indices, the vector index (built once
the table is large enough, retrained as it grows), compaction and the cleanup of unpinned
versions. Store.refresh_indices and Store.vector_index call these under the writer lock or for
``status``."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

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


def refresh_indices(table: Any, dim: int, retention: timedelta = timedelta(days=7), *,
                    ann_min_rows: int | None = None,
                    index_state: Callable[[Any], dict[str, Any] | None] | None = None) -> None:
    """Create the FTS and ACL indices on first use, and the vector index once the table
    holds ``ann_min_rows`` chunks; afterwards fold new rows into them, retrain the vector
    index when the table outgrew what it was trained on (``ANN_RETRAIN_GROWTH``), compact
    small files, and remove versions older than ``retention`` that no audit record pins
    (pinned versions carry a tag, and LanceDB's cleanup never removes a tagged one).
    ``index_state`` reads the vector index's state (Store.vector_index: read errors as StoreError)."""
    from lancedb.index import FTS, LabelList

    ann_min_rows = ANN_MIN_ROWS if ann_min_rows is None else ann_min_rows
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
    state = index_state(table) if index_state else vector_index_state(table.to_lance())
    if (state is None and table.count_rows() >= ann_min_rows) or \
            (state is not None and state["needs_retraining"]):
        build_vector_index(table, dim)
    if names >= {"search_text_idx", "acl_idx"}:
        table.to_lance().cleanup_old_versions(older_than=retention,
                                              error_if_tagged_old_versions=False)


def build_vector_index(table: Any, dim: int) -> None:
    """Train the ``ANN_TYPE`` index on every row now in the table (a new index replaces
    the old one in one commit: a reader sees either, never neither)."""
    from lancedb.index import HnswSq, IvfPq

    if ANN_TYPE == "IVF_HNSW_SQ":  # the alternative scripts/bench_ann.py --index measures
        config: Any = HnswSq(distance_type="cosine")
    else:  # PQ codes of dim/8 bytes, at most 48 (384 dimensions -> 48 sub-vectors of 8)
        sub_vectors = max(d for d in range(1, 49) if dim % d == 0)
        config = IvfPq(distance_type="cosine", num_sub_vectors=sub_vectors)
    table.create_index("vector", config=config, name=VECTOR_INDEX, replace=True)


def vector_index_state(dataset: Any) -> dict[str, Any] | None:
    """The vector index of a lance dataset as ``status`` shows it, or None while the vector leg is
    a flat scan: its type, the rows it covers and those it does not (searched flat until the next
    ingest/reindex folds them in), the rows it was trained on, and whether the next
    ingest/reindex retrains it."""
    if VECTOR_INDEX not in _index_names(dataset):
        return None
    os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")
    stats = dataset.stats.index_stats(VECTOR_INDEX)
    per_delta = list(stats.get("num_indexed_rows_per_delta") or [stats["num_indexed_rows"]])
    trained = int(per_delta[0])
    indexed, unindexed = int(stats["num_indexed_rows"]), int(stats["num_unindexed_rows"])
    retrain_at = int(trained * (1 + ANN_RETRAIN_GROWTH))
    return {"type": str(stats["index_type"]), "indexed_rows": indexed,
            "unindexed_rows": unindexed, "trained_rows": trained,
            "deltas": len(per_delta), "retrain_at_rows": retrain_at,
            "needs_retraining": indexed + unindexed > retrain_at}


def _index_names(dataset: Any) -> set[str]:
    """The names of a lance dataset's indices."""
    return {ix.name for ix in dataset.describe_indices()}
