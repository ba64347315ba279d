"""Small deterministic stand-ins for the embedder and the generator, for fast unit tests.

The real components have their own tests (tests/test_real_*.py) that run them for real.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

import numpy as np

from ragcli.runtimes.generator import Generation, TokenCallback

_WORD = re.compile(r"[a-z0-9]+")


class HashEmbedder:
    """Bag of words hashed into 256 dimensions, L2-normalised: similar words, similar vectors."""

    id = "test-hash-256"
    dim = 256
    max_tokens = 254

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                bucket = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "little")
                out[row, bucket % self.dim] += 1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
        return out


class EchoGenerator:
    """Answers with the first sentence of passage [1], cited; or a fixed reply if given."""

    def __init__(self, reply: str | None = None, context_tokens: int = 2048,
                 span: str | None = None) -> None:
        from pathlib import Path

        self.reply = reply
        self.span = span  # the continuation score_continuations prefers (else: the shortest)
        self.model_path = Path("/fake/echo.gguf")
        self.adapter_path: Path | None = None
        self.context_tokens = context_tokens
        self.prompts: list[str] = []

    def model_sha256(self) -> str:
        return "0" * 64

    def adapter_sha256(self) -> str | None:
        return None

    def runtime(self) -> str:
        return "echo 1.0"

    def render(self, messages: Sequence[tuple[str, str]]) -> str:
        return "".join(f"<{role}>\n{content}\n" for role, content in messages) + "<assistant>\n"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, prompt: str, *, max_tokens: int, temperature: float, seed: int,
                 on_token: TokenCallback | None = None) -> Generation:
        self.prompts.append(prompt)
        if self.reply is not None:
            text = self.reply
        else:
            match = re.search(r'\[1\] [^\n]*\n"""\n(.*?)\n"""', prompt, re.S)
            first = match.group(1).split(". ")[0].rstrip(".") if match else "nothing"
            text = f"{first}. [1]"
        if on_token:
            on_token(text)
        return Generation(text, len(text.split()), "stop", {"temperature": temperature,
                          "seed": seed, "max_tokens": max_tokens}, {"generate": 1.0})

    def score_continuations(self, messages: Sequence[tuple[str, str]],
                            continuations: Sequence[str],
                            on_prompt: Callable[[str], None] | None = None, *,
                            bonus: Sequence[float] | None = None,
                            ) -> tuple[str, list[float | None]]:
        prompt = self.render(messages)
        if on_prompt is not None:
            on_prompt(prompt)
        self.prompts.append(prompt)
        return prompt, [100.0 if c == self.span else -10.0 * len(c.split()) for c in continuations]


class RuleReader:
    """A stand-in for the extractive reader: in each passage, the rules' best span of the
    sentence that covers the question best, scored by that coverage plus the span's rule score."""

    id = "test-rules"

    def read(self, question: str, passages: Sequence[str]) -> list:
        from ragcli.answer.spans import rule_spans
        from ragcli.runtimes.reader import ReadSpan
        from ragcli.text import content_terms, coverage

        asked = content_terms(question)
        found = []
        for n, passage in enumerate(passages):
            best = None
            for match in re.finditer(r"[^.!?\n]+[.!?]?", passage):
                sentence = match.group()
                spans = rule_spans(question, sentence)
                if spans:
                    score = round(coverage(asked, sentence) * 10 + spans[0].score, 3)
                    if best is None or score > best.score:
                        begin = match.start() + spans[0].start
                        best = ReadSpan(n, begin, begin + len(spans[0].text), spans[0].text, score)
            if best is not None:
                found.append(best)
        return found

    def record(self) -> dict[str, str]:
        return {"id": self.id, "weights_sha256": "0" * 64, "onnx_sha256": "0" * 64,
                "runtime": "test"}
