"""ragas' non-LLM metrics on evaluated cases (ragas 0.4: heavy, imported only here, only when
installed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .goldens import Golden


class ScoredCase(Protocol):
    """What ragas reads of an evaluated case (evaluation.CaseResult), and where it writes."""

    @property
    def golden(self) -> Golden: ...
    @property
    def error(self) -> str | None: ...
    @property
    def refused(self) -> bool: ...
    @property
    def answer(self) -> str: ...
    @property
    def retrieved_docs(self) -> Sequence[str]: ...
    @property
    def ragas(self) -> dict[str, float]: ...


def score_with_ragas(results: Sequence[ScoredCase]) -> None:
    """ragas' non-LLM metrics per case, into ``CaseResult.ragas`` (imported lazily; ragas posts
    telemetry unless told not to; without ragas installed, nothing)."""
    import os

    os.environ["RAGAS_DO_NOT_TRACK"] = "true"
    try:
        import asyncio
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from ragas.dataset_schema import SingleTurnSample
            from ragas.metrics import (
                ExactMatch,
                IDBasedContextPrecision,
                IDBasedContextRecall,
                NonLLMStringSimilarity,
                RougeScore,
                StringPresence,
            )
    except ImportError:
        return
    jobs: list[tuple[ScoredCase, str, Any, Any]] = []
    for r in results:
        if r.error:
            continue
        if r.golden.expected_docs and not r.golden.must_refuse:
            retrieved: list[str | int] = list(r.retrieved_docs) or [""]
            expected: list[str | int] = list(r.golden.expected_docs)
            sample = SingleTurnSample(retrieved_context_ids=retrieved,
                                      reference_context_ids=expected)
            jobs += [(r, "ragas_id_context_precision", IDBasedContextPrecision(), sample),
                     (r, "ragas_id_context_recall", IDBasedContextRecall(), sample)]
        if r.golden.expected_answers and not r.golden.must_refuse:
            sample = SingleTurnSample(response="" if r.refused else r.answer,
                                      reference=r.golden.expected_answers[0])
            jobs += [(r, "ragas_exact_match", ExactMatch(), sample),
                     (r, "ragas_string_presence", StringPresence(), sample),
                     (r, "ragas_string_similarity", NonLLMStringSimilarity(), sample),
                     (r, "ragas_rouge", RougeScore(), sample)]

    async def score_all() -> list[float]:
        return list(await asyncio.gather(*(m.single_turn_ascore(s) for _, _, m, s in jobs)))

    for (case, name, _, _), value in zip(jobs, asyncio.run(score_all()), strict=True):
        case.ragas[name] = float(value)
