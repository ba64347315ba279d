"""The model-file hash cache: fast on a repeat, never stale after a change."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ragcli.paths import cached_file_sha256


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


def test_scoring_threads_leave_the_cores_other_work_is_using(monkeypatch: pytest.MonkeyPatch) -> None:
    """Span scoring runs on batch_threads only while no other thread wants those cores: llama.cpp's
    threads meet after every operation, and one without a core holds the rest up."""
    from ragcli.runtimes import generation

    monkeypatch.setattr(generation, "usable_cores", lambda limit: 2)
    gen = generation.LlamaCppGenerator.__new__(generation.LlamaCppGenerator)
    gen.batch_threads = 2
    for busy, threads in ((0, 2), (1, 1), (5, 1), (None, 1)):
        monkeypatch.setattr(generation, "busy_elsewhere", lambda busy=busy: busy)
        assert gen.scoring_threads() == threads
    gen.batch_threads = 1
    monkeypatch.setattr(generation, "busy_elsewhere", lambda: 0)
    assert gen.scoring_threads() == 1


def test_busy_elsewhere_reads_the_running_count() -> None:
    from ragcli.runtimes.generation import busy_elsewhere

    busy = busy_elsewhere()
    assert busy is None or busy >= 0  # None only where /proc/loadavg is missing
    if Path("/proc/loadavg").is_file():
        assert busy is not None


def test_prompt_cache_round_trip_rejects_damage_and_keeps_the_newest(tmp_path: Path) -> None:
    from ragcli.runtimes.prompt_cache import PromptCache

    cache = PromptCache(tmp_path / "prompts", "model|adapter|build")
    assert cache.load([1, 2, 3]) is None
    cache.save([1, 2, 3], b"state")
    assert cache.load([1, 2, 3]) == b"state"
    assert cache.load([1, 2, 4]) is None  # other tokens: another file
    assert PromptCache(tmp_path / "prompts", "other build").load([1, 2, 3]) is None
    path = cache.path([1, 2, 3])
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    assert cache.load([1, 2, 3]) is None
    for n in range(PromptCache.KEEP + 3):
        cache.save([n], b"s")
        os.utime(cache.path([n]), (n + 1, n + 1))  # older first
    assert len(list((tmp_path / "prompts").glob("*.kv"))) == PromptCache.KEEP
    assert cache.load([PromptCache.KEEP + 2]) == b"s"
