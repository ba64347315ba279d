"""What the training scripts share (train_reader.py, train_reranker.py): reading BEIR JSONL, and
from ragcli/runtimes/training.py (shared with ``ragcli tune --reader``) padded batches, the
optimizer and its schedule, progress lines, and writing what training changed.
A helper, not an entry point."""

from __future__ import annotations

import json
from pathlib import Path

from ragcli.runtimes.training import Trainer, padded

__all__ = ["Trainer", "padded", "read_jsonl"]


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
