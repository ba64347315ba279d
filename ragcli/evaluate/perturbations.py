"""Perturbations: changes that must not change a case's verdict (the gate's unstable cases)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..answer.answering import Answerer
from ..errors import UsageError
from ..runtimes.embedder import Embedder
from ..runtimes.generator import Generator
from ..runtimes.reader import Reader

QUERY_NOISE = 1e-3
"""Norm of the random vector added to every (unit) query vector by the ``query-noise``
perturbation: it moves a cosine by up to 1e-3, far more than any CPU's rounding moves the fp32
embedder's vectors (scripts/bench_embedders measures that, see docs/evaluation.md)."""
CONFIDENCE_MARGIN = QUERY_NOISE / 2
"""A case whose confidence lies this close to ``min_confidence`` is unstable without any re-run:
evidence is 0.5 * cosine + 0.5 * coverage, so ``QUERY_NOISE`` moves it by half as much."""


class NoisyQueries:
    """An embedder whose vectors get seeded noise of norm ``scale``, renormalised (per text, so
    the same question is perturbed the same way in every run)."""

    def __init__(self, inner: Embedder, scale: float = QUERY_NOISE) -> None:
        self.inner, self.scale = inner, scale
        self.id, self.dim, self.max_tokens = inner.id, inner.dim, inner.max_tokens

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed(self, texts: Sequence[str]) -> Any:
        import hashlib

        import numpy as np

        vectors = np.array(self.inner.embed(texts), dtype=np.float32)
        for row, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            noise = np.random.default_rng(seed).standard_normal(self.dim)
            vectors[row] += (self.scale * noise / np.linalg.norm(noise)).astype(np.float32)
            vectors[row] /= np.linalg.norm(vectors[row])
        return vectors


def _one_thread(answerer: Answerer) -> Answerer:
    def generator() -> Generator:
        built = answerer.generator_factory()
        rethread = getattr(built, "with_batch_threads", None)
        return rethread(1) if rethread else built

    def reader() -> Reader:
        built = answerer.reader()
        rethread = getattr(built, "with_threads", None)
        return rethread(1) if rethread else built

    rethread = getattr(answerer.embedder, "with_threads", None)
    embedder = rethread(1) if rethread else answerer.embedder
    return Answerer(replace(answerer.settings, batch_threads=1), embedder, generator,
                    reader_factory=reader)


def _query_noise(answerer: Answerer) -> Answerer:
    return Answerer(answerer.settings, NoisyQueries(answerer.embedder), answerer.generator_factory,
                    reader_factory=answerer.reader_factory)


PERTURBATIONS: dict[str, Callable[[Answerer], Answerer]] = {
    "threads": _one_thread,  # prefill, the embedder and the reader on one thread, not every core
    "query-noise": _query_noise,  # QUERY_NOISE on every query vector
}


def parse_perturbations(spec: str | None) -> list[str]:
    """``--perturb``: 'all' or a comma list of ``PERTURBATIONS`` names (None or '': none)."""
    if not spec:
        return []
    names = list(PERTURBATIONS) if spec.strip() == "all" else \
        [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown or not names:
        raise UsageError(f"--perturb: unknown perturbation {', '.join(unknown) or repr(spec)}; "
                         f"use 'all' or some of: {', '.join(PERTURBATIONS)}")
    return names


def perturb(answerer: Answerer, name: str) -> Answerer:
    """``answerer`` under the perturbation ``name`` (one of ``PERTURBATIONS``)."""
    return PERTURBATIONS[name](answerer)
