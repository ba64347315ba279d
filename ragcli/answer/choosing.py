"""Who picks the short answer inside the extract's sentence (mode ``auto``), and how.

- A GGUF model run here scores every candidate span (``Generator.score_continuations``: the
  likelihood of each as the answer) plus the rules' score and a length term (reading.choose_span).
- A served model (route ``large``, or ``small-first`` escalating) cannot score given spans through
  an OpenAI-compatible API, so it is asked the same few-shot question (``span_messages``) and
  writes a short answer; the candidate span whose words overlap that answer best is chosen (the
  rules' score and the length term break ties). The short answer is a span of the quote either
  way: what the served model wrote is recorded, never shown.
- No model (or a prompt too long to score): the rules' best span.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..runtimes.generator import Generator, PromptTooLong, model_record
from .reading import Choice, SpanScorer, choose_span, span_messages

SERVED_SPAN_TOKENS = 24
"""What a served model may write as a span answer: the worked examples' answers are 2-3 words."""
OVERLAP_WEIGHT = 100.0
"""A served answer's word overlap (0..1) outweighs the rule and length terms (a few units at
most), which only break ties between spans that overlap it equally."""
_WORDS = re.compile(r"\w+")


class _NoOverlap(Exception):
    """A served span answer shares no word with any candidate span."""


def usage_of(model: Generator, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A model call's token counts: the server's when it reported them, else ragcli's."""
    reported = (getattr(model, "last", None) or {}).get("usage")
    if reported:
        return {"prompt_tokens": reported.get("prompt_tokens") or prompt_tokens,
                "completion_tokens": reported.get("completion_tokens", completion_tokens),
                "source": reported.get("source", "server")}
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "source": "counted"}


def overlap(answer: str, span: str) -> float:
    """Token F1 of ``span`` against ``answer`` (lower-cased words), 0 when either has none."""
    said, offered = Counter(_WORDS.findall(answer.lower())), Counter(_WORDS.findall(span.lower()))
    common = sum((said & offered).values())
    if not common:
        return 0.0
    precision, recall = common / sum(offered.values()), common / sum(said.values())
    return 2 * precision * recall / (precision + recall)


def choose_short(model: Generator | None, question: str, sentence: str, record: dict[str, Any],
                 *, usage_key: str, seed: int,
                 checkpoint: Callable[[], None] | None = None) -> Choice | None:
    """The short answer in ``sentence``, chosen by ``model`` (None: the rules), recording the
    prompt, the model and the top candidates in ``record`` (``usage_key``: whose token usage)."""
    if model is None:
        return _recorded(choose_span(question, sentence), record, None)
    messages = span_messages(question, sentence)

    def on_prompt(prompt: str) -> None:
        record["prompt"] = {"text": prompt, "messages": [list(m) for m in messages],
                            "purpose": "span choice"}
        record["model"] = model_record(model)
        if checkpoint is not None:
            checkpoint()  # the exact prompt is on disk before the model runs

    scorer: SpanScorer
    if getattr(model, "scores_spans", True):
        def scorer(spans: Sequence[str], bonus: Sequence[float]) -> list[float | None]:
            scores = model.score_continuations(messages, spans, on_prompt, bonus=bonus)[1]
            used = record.setdefault("usage", {}).setdefault(
                usage_key, {"prompt_tokens": 0, "completion_tokens": 0, "source": "counted"})
            used["prompt_tokens"] += int(getattr(model, "scored_tokens", 0))
            return scores
    else:
        def scorer(spans: Sequence[str], bonus: Sequence[float]) -> list[float | None]:
            prompt = model.render(messages)
            on_prompt(prompt)
            start = time.perf_counter()
            written = model.generate(prompt, max_tokens=SERVED_SPAN_TOKENS, temperature=0.0,
                                     seed=seed)
            record["model"] = model_record(model)  # what the server said of itself
            record["output"] = {"raw": written.text, "tokens": written.tokens,
                                "finish_reason": written.finish_reason,
                                "ms": round((time.perf_counter() - start) * 1000, 1)}
            record.setdefault("usage", {})[usage_key] = usage_of(
                model, model.count_tokens(prompt), written.tokens)
            overlaps = [overlap(written.text, s) for s in spans]
            if not any(overlaps):  # it wrote nothing the sentence says: the rules choose
                raise _NoOverlap
            return [OVERLAP_WEIGHT * o for o in overlaps]
    try:
        choice = choose_span(question, sentence, scorer)
    except (PromptTooLong, _NoOverlap):
        choice = choose_span(question, sentence)
    return _recorded(choice, record, model)


def _recorded(choice: Choice | None, record: dict[str, Any],
              model: Generator | None) -> Choice | None:
    if choice is not None:
        record["span_choice"] = {"method": choice.method, "chosen": choice.span.text,
                                 "candidates": [list(c) for c in choice.scored]}
        if choice.method == "model" and model is not None:
            if getattr(model, "scores_spans", True):  # the scores do not depend on it: for timings
                record["span_choice"]["threads"] = getattr(model, "score_threads", 1)
            else:
                record["span_choice"]["by"] = "served answer overlap"
    return choice
