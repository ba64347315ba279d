"""The chunks table's shape: its columns, the store format, the manifest, and the ACL filter
every search applies inside LanceDB (a chunk a user may not read is never a candidate)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

FORMAT = 3  # 2: root, pages and mtime columns; 3: corpus and doc_key (Store.migrate)
TABLE = "chunks"
_HIT_COLUMNS = ["chunk_id", "doc_id", "source", "title", "heading_path", "text", "chunk_hash", "acl",
                "corpus"]  # what a search returns: what retrieval.Hit holds, nothing more
PIN_PREFIX = "audit-v"  # tag of a table version an audit record points at


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
