"""The span prompt's shared beginning as a model's keys and values, kept on disk between processes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path


class PromptCache:
    """The keys and values a model computed for a prompt's shared beginning (mode auto's
    instruction, worked examples and the question's ``Text:`` label), kept on disk so that a new
    process loads them instead of computing them again: 161 tokens, about 1 s of one core for
    SmolLM2, 3.6 MB.

    One file per model file, adapter, llama.cpp build and token sequence (all in the file's
    name, a SHA-256); the file holds the tokens and the SHA-256 of the state after them, and a
    file that does not match is ignored (and rewritten). The state is what this build computed
    for those tokens, byte for byte, so a score from a loaded state equals one computed afresh
    (tests/test_real_components.py). An unwritable cache directory only costs the time."""

    FORMAT = 1
    KEEP = 8

    def __init__(self, directory: Path, identity: str) -> None:
        self.directory = directory
        self.identity = identity

    def path(self, tokens: Sequence[int]) -> Path:
        key = hashlib.sha256(f"{self.FORMAT}|{self.identity}|{list(tokens)}".encode()).hexdigest()
        return self.directory / f"{key[:40]}.kv"

    def load(self, tokens: Sequence[int]) -> bytes | None:
        import json

        try:
            with self.path(tokens).open("rb") as handle:
                header = json.loads(handle.readline())
                state = handle.read()
        except (OSError, ValueError):
            return None
        if not isinstance(header, dict) or header.get("tokens") != list(tokens) or \
                header.get("sha256") != hashlib.sha256(state).hexdigest():
            return None
        return state

    def save(self, tokens: Sequence[int], state: bytes) -> None:
        import json

        from ..paths import write_cache

        path = self.path(tokens)
        header = {"format": self.FORMAT, "tokens": list(tokens),
                  "sha256": hashlib.sha256(state).hexdigest()}
        if write_cache(path, json.dumps(header).encode() + b"\n" + state):
            self.prune(keep=path)

    def prune(self, keep: Path) -> None:
        """Keep the ``KEEP`` newest files (other models, adapters or llama.cpp builds)."""
        try:
            files = sorted(self.directory.glob("*.kv"), key=lambda f: f.stat().st_mtime,
                           reverse=True)
            for old in [f for f in files if f != keep][self.KEEP - 1:]:
                old.unlink(missing_ok=True)
        except OSError:
            pass  # another process pruned meanwhile
