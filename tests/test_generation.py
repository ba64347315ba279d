"""The model-file hash cache: fast on a repeat, never stale after a change."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ragcli.generation import cached_file_sha256


def test_cached_hash_follows_every_change(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"a" * 1000)
    first = cached_file_sha256(model)
    assert first == hashlib.sha256(model.read_bytes()).hexdigest()
    assert (tmp_path / "cache" / "ragcli" / "sha256.json").is_file()  # conftest's XDG_CACHE_HOME
    stat = model.stat()
    with model.open("r+b") as handle:  # same size, same mtime afterwards: only ctime tells
        handle.seek(10)
        handle.write(b"b")
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cached_file_sha256(model) == hashlib.sha256(model.read_bytes()).hexdigest() != first
    replaced = tmp_path / "other.gguf"
    replaced.write_bytes(b"GGUF" + b"c" * 1000)
    os.replace(replaced, model)  # a new file at the same path
    assert cached_file_sha256(model) == hashlib.sha256(b"GGUF" + b"c" * 1000).hexdigest()
