"""``ragcli status --verify``: read every row of the store back and check it against itself.

LanceDB does not checksum its data files: 4 KB overwritten in the middle of one came back as NaN
vectors without any error (measured while this was written). So the check is end to end:

- every data and deletion file the current version names exists and is not empty;
- every row can be read, with its vector (a damaged file can also fail to decode);
- every vector is finite and not all zeros;
- every chunk's hash matches its text (``sha256(search_text)``), its ``search_text`` matches its
  title, heading path and text, its id is ``corpus:doc_id#ordinal``, it has at least one ACL group;
- no chunk id appears twice, and each document's chunks are numbered 0..n-1 with one doc hash.

What it cannot see: a change that keeps every row self-consistent (someone rewriting both a text
and its hash). The repair for everything it finds is to rebuild from the sources:
``ragcli reindex --rebuild PATHS``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RagError, first_line
from ..models import doc_key, section_label
from .store import Store
from .table import TABLE

_EXAMPLES = 3  # chunk ids shown per kind of problem
_BATCH = 4096


@dataclass
class Verification:
    rows: int = 0
    documents: int = 0
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    roots: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, where: str) -> None:
        self.problems[kind].append(where)

    def summary(self) -> str:
        """One line: each kind of problem, how many, and the first few places."""
        parts = []
        for kind, where in sorted(self.problems.items()):
            shown = ", ".join(where[:_EXAMPLES]) + (", ..." if len(where) > _EXAMPLES else "")
            parts.append(f"{len(where)} {kind} ({shown})")
        return "; ".join(parts)

    def repair_command(self) -> str:
        roots = " ".join(self.roots) if self.roots else "PATHS"
        return f"ragcli reindex --rebuild {roots}"

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "documents": self.documents,
                "problems": {k: {"count": len(v), "examples": v[:_EXAMPLES]}
                             for k, v in sorted(self.problems.items())},
                "repair": None if self.ok else self.repair_command()}


def verify(store: Store) -> Verification:
    """Check every file and row of the store's current version; never raises for damage (an
    older format is not damage: that raises the StoreError saying that reindex migrates it)."""
    store.require_current()
    result = Verification()
    try:
        dataset = store.table().to_lance()
    except RagError as exc:
        result.add("unopenable table", first_line(exc, 200))
        return result
    except Exception as exc:  # noqa: BLE001 - any failure to open is damage to report
        result.add("unopenable table", f"{type(exc).__name__}: {first_line(exc, 200)}")
        return result
    # file-level checks on local disk; in object storage, reading every row below finds a
    # missing or damaged file as an unreadable fragment
    base = Path(store.path) / "lancedb" / f"{TABLE}.lance"
    for fragment in dataset.get_fragments() if not store.remote else ():
        files = [base / "data" / f.path for f in fragment.data_files()]
        deletion = fragment.deletion_file()
        if deletion:
            files.append(base / str(deletion))
        for path in files:
            if not path.is_file():
                result.add("missing data files", path.name)
            elif path.stat().st_size == 0:
                result.add("empty data files", path.name)
    if result.problems:
        return result  # reading would only fail on the missing files
    _check_rows(dataset, result)
    return result


def _check_rows(dataset: Any, result: Verification) -> None:
    seen: set[str] = set()
    docs: dict[str, dict[str, Any]] = {}
    roots: set[str] = set()
    columns = ["chunk_id", "doc_id", "ordinal", "title", "heading_path", "text", "search_text",
               "chunk_hash", "doc_hash", "acl", "root", "vector", "corpus", "doc_key"]
    try:
        for batch in dataset.to_batches(columns=columns, batch_size=_BATCH):
            vectors = batch.column("vector")
            finite = np.ones(len(batch), dtype=bool)
            nonzero = np.ones(len(batch), dtype=bool)
            if len(batch) and vectors.null_count == 0:
                values = vectors.flatten().to_numpy(zero_copy_only=False).reshape(len(batch), -1)
                finite = np.isfinite(values).all(axis=1)
                nonzero = (values != 0).any(axis=1)
            else:
                finite = np.array([v.is_valid for v in vectors], dtype=bool)
            for i, row in enumerate(batch.drop_columns(["vector"]).to_pylist()):
                result.rows += 1
                if not finite[i]:
                    result.add("non-finite vectors", str(row["chunk_id"]))
                elif not nonzero[i]:
                    result.add("all-zero vectors", str(row["chunk_id"]))
                _check_row(row, result, seen)
                entry = docs.setdefault(row["doc_key"], {"ordinals": [], "hashes": set()})
                entry["ordinals"].append(row["ordinal"])
                entry["hashes"].add(row["doc_hash"])
                if row["root"]:
                    roots.add(row["root"])
    except Exception as exc:  # noqa: BLE001 - a file that does not decode is damage to report
        result.add("unreadable rows", f"after row {result.rows}: {type(exc).__name__}: "
                   f"{first_line(exc, 200)}")
    for doc_id, entry in sorted(docs.items()):
        if sorted(entry["ordinals"]) != list(range(len(entry["ordinals"]))):
            result.add("documents with missing or repeated chunks", doc_id)
        if len(entry["hashes"]) > 1:
            result.add("documents half old, half new", doc_id)
    result.documents = len(docs)
    result.roots = sorted(roots)


def _check_row(row: dict[str, Any], result: Verification, seen: set[str]) -> None:
    chunk_id = str(row["chunk_id"])
    if chunk_id in seen:
        result.add("duplicate chunk ids", chunk_id)
    seen.add(chunk_id)
    text = row["search_text"] or ""
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != row["chunk_hash"]:
        result.add("chunk hash mismatches", chunk_id)
    head = section_label(row["title"] or "", row["heading_path"] or "")
    if text != (f"{head}\n{row['text']}" if head else row["text"]):
        result.add("search text not matching chunk text", chunk_id)
    if row["doc_key"] != doc_key(row["corpus"] or "", row["doc_id"]) \
            or chunk_id != f"{row['doc_key']}#{row['ordinal']}":
        result.add("chunk ids not matching corpus:doc_id#ordinal", chunk_id)
    if not row["acl"]:
        result.add("chunks without ACL groups", chunk_id)
