"""Ingestion: files -> documents (sources) -> chunks (chunking) -> embedded and written to the store
(indexing: only new and changed documents), on this machine or as Ray Data stages (distributed)."""
