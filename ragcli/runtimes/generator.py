"""What every model runtime shares: the Generator protocol that answering calls, a generation's
result, streaming, and the model's part of an audit record. The GGUF runtime (generation.py)
and the OpenAI-compatible client (remote.py) both implement it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import ModelError

TokenCallback = Callable[[str], None]


SCORE_CONTEXT_TOKENS = 512
"""Context of the scoring instance (``score_continuations``): a quote, a question and a span.
It keeps every position's logits (n_ctx x vocabulary floats: 100 MB for SmolLM2 at 512)."""


class PromptTooLong(ModelError):
    """A prompt to score does not fit ``SCORE_CONTEXT_TOKENS`` (the caller falls back)."""


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: int
    finish_reason: str
    sampling: dict[str, Any]
    timings_ms: dict[str, float] = field(default_factory=dict)


class Generator(Protocol):
    """A model ragcli can prompt: a GGUF file run here (LlamaCppGenerator) or a served one
    (remote.OpenAIGenerator: no file, so no path or SHA-256, and no span scoring)."""

    @property
    def model_path(self) -> Path | None: ...

    @property
    def adapter_path(self) -> Path | None: ...

    @property
    def context_tokens(self) -> int: ...

    def model_sha256(self) -> str | None: ...

    def adapter_sha256(self) -> str | None: ...

    def runtime(self) -> str: ...

    def render(self, messages: Sequence[tuple[str, str]]) -> str: ...

    def count_tokens(self, text: str) -> int: ...

    def generate(self, prompt: str, *, max_tokens: int, temperature: float, seed: int,
                 on_token: TokenCallback | None = None) -> Generation: ...

    def score_continuations(self, messages: Sequence[tuple[str, str]],
                            continuations: Sequence[str],
                            on_prompt: Callable[[str], None] | None = None, *,
                            bonus: Sequence[float] | None = None,
                            ) -> tuple[str, list[float | None]]: ...


class Streamed:
    """The text of a streamed generation as it arrives: pieces, their count, the time to the
    first one, and each passed on to ``on_token``."""

    def __init__(self, on_token: TokenCallback | None) -> None:
        self.on_token = on_token
        self.start = time.perf_counter()
        self.first_ms: float | None = None
        self.pieces: list[str] = []

    def add(self, text: str) -> None:
        if not text:
            return
        if self.first_ms is None:
            self.first_ms = (time.perf_counter() - self.start) * 1000
        self.pieces.append(text)
        if self.on_token:
            self.on_token(text)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def timings_ms(self) -> dict[str, float]:
        total = (time.perf_counter() - self.start) * 1000
        return {"first_token": self.first_ms or total, "generate": total}


def model_record(generator: Generator) -> dict[str, Any]:
    """What an audit record says of the model: its file, SHA-256, runtime, and the LoRA adapter
    (path and SHA-256) or None; for a served model (remote.py) its endpoint and reported name."""
    own = getattr(generator, "record", None)
    if callable(own):
        return dict(own())
    adapter = None if generator.adapter_path is None else \
        {"path": str(generator.adapter_path), "sha256": generator.adapter_sha256() or ""}
    return {"path": str(generator.model_path), "sha256": generator.model_sha256(),
            "runtime": generator.runtime(), "adapter": adapter}
