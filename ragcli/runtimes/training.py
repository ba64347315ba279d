"""Training the encoders fine-tuned here (the reader, the reranker) on the CPU with torch: padded
batches, the optimiser and its schedule, progress, writing what training changed
(runtimes/finetuned.py's format), and ``tune_reader``, which fine-tunes the shipped reader further
on a user's own questions (``ragcli tune --reader``). The training scripts (``scripts/train_*.py``)
use the same pieces, so a file they write and one ``tune`` writes are built and run alike.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..paths import file_sha256
from .finetuned import WEIGHTS_FORMAT, trained_tensors, write_weights
from .reader import Window

FROZEN = "bert.embeddings."  # the embeddings stay as shipped: the delta covers the layers only


def padded(rows: Sequence[tuple[Sequence[int], Sequence[int]]]) -> tuple[Any, Any, Any]:
    """(ids, type ids, attention mask) of ``rows`` (token ids, type ids), zero-padded."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for row, (one, kinds) in enumerate(rows):
        ids[row, :len(one)] = torch.tensor(one)
        types[row, :len(one)] = torch.tensor(kinds)
        mask[row, :len(one)] = 1
    return ids, types, mask


class Trainer:
    """AdamW (weight decay 0.01) over every parameter but the embeddings, a linear warm-up over
    the first 10 % of ``steps`` then a linear decay to 0, gradients clipped at 1.0; a progress
    line every 50 steps (``report``: where it goes, print by default)."""

    def __init__(self, model: Any, lr: float, steps: int,
                 report: Callable[[str], None] | None = None) -> None:
        import torch

        self.model, self.steps = model, steps
        self.report = report or (lambda line: print(line, flush=True))
        self.base = {k: v.detach().clone() for k, v in model.named_parameters()}
        for name, param in model.named_parameters():
            param.requires_grad = not name.startswith(FROZEN)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=lr, weight_decay=0.01)
        warmup = max(1, int(steps * 0.1))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
        self.step = 0
        self.running = 0.0
        self.began = time.perf_counter()
        model.train()

    def update(self, loss: Any, label: str = "") -> None:
        import torch

        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad()
        self.step += 1
        self.running += loss.item()
        if self.step % 50 == 0 or self.step == self.steps:
            elapsed = time.perf_counter() - self.began
            block = self.step % 50 or 50  # steps since the last line
            self.report(f"  {label}step {self.step}/{self.steps} loss {self.running / block:.3f} "
                        f"{elapsed / 60:.1f} min (~{elapsed / self.step * (self.steps - self.step) / 60:.0f} "
                        "min left)")
            self.running = 0.0

    @property
    def minutes(self) -> float:
        return (time.perf_counter() - self.began) / 60

    def ship(self, head: str, out: Path, model_dir: Path, summary: dict[str, Any],
             shape: dict[str, str] | None = None, base: dict[str, Any] | None = None) -> None:
        """Write what training changed (runtimes/finetuned.py) with this run's ``summary`` and
        the ``shape`` the runtime needs to rebuild the model (``ragcli.*`` metadata); ``base``:
        the encoder's own weights when training did not start from them (a tuned reader)."""
        out.parent.mkdir(parents=True, exist_ok=True)
        write_weights(trained_tensors(self.model, base or self.base, head), out, {
            "ragcli.format": str(WEIGHTS_FORMAT),
            "ragcli.base_sha256": file_sha256(model_dir / "model.safetensors"),
            "ragcli.training": json.dumps(summary, sort_keys=True),
            **(shape or {})})  # the same tensors, the same bytes
        self.report(f"trained in {self.minutes:.1f} min; wrote {out} "
                    f"({out.stat().st_size / 1e6:.1f} MB) sha256 {file_sha256(out)}")


def answer_offset(text: str, answers: Sequence[str]) -> tuple[int, int] | None:
    """Where the first of ``answers`` found in ``text`` is (as written first, then ignoring case)."""
    for answer in answers:
        at = text.find(answer)
        if answer and at >= 0:
            return at, at + len(answer)
    lowered = text.lower()
    for answer in answers:
        at = lowered.find(answer.lower())
        if answer and at >= 0:
            return at, at + len(answer)
    return None


def labelled(window: Window, span: tuple[int, int] | None) -> tuple[int, int]:
    """Token positions of the answer in ``window``, or (0, 0) when it is not wholly inside."""
    offsets = window.offsets
    if span is None or not offsets or span[0] < offsets[0][0] or span[1] > offsets[-1][1]:
        return 0, 0
    start = next(i for i, (_, end) in enumerate(offsets) if end > span[0])
    end = max(i for i, (begin, _) in enumerate(offsets) if begin < span[1])
    if end < start:
        return 0, 0
    return window.context_start + start, window.context_start + end


def length_batches(items: Sequence[tuple[Window, int, int]], size: int,
                   rng: random.Random) -> list[list[int]]:
    """Shuffled, then sorted by length within pools of 50 batches (little padding), batches shuffled."""
    order = list(range(len(items)))
    rng.shuffle(order)
    pool = size * 50
    out = []
    for begin in range(0, len(order), pool):
        part = sorted(order[begin:begin + pool], key=lambda i: len(items[i][0].ids))
        out += [part[i:i + size] for i in range(0, len(part), size)]
    rng.shuffle(out)
    return out


def window_tensors(items: Sequence[tuple[Window, int, int]], batch: Sequence[int]) -> tuple[Any, ...]:
    """(ids, type ids, mask, answer starts, answer ends) of the windows ``batch`` names."""
    import torch

    ids, types, mask = padded([(items[i][0].ids, items[i][0].type_ids) for i in batch])
    starts = torch.tensor([items[i][1] for i in batch])
    ends = torch.tensor([items[i][2] for i in batch])
    return ids, types, mask, starts, ends


def train_spans(trainer: Trainer, items: Sequence[tuple[Window, int, int]],
                plan: Sequence[Sequence[Sequence[int]]]) -> None:
    """Train a span model on ``items``: one optimiser step per batch of ``plan`` (epochs of
    batches of item indices), the loss transformers' start/end cross-entropy."""
    for epoch, epoch_batches in enumerate(plan):
        for one in epoch_batches:
            ids, types, mask, starts, ends = window_tensors(items, one)
            output = trainer.model(input_ids=ids, token_type_ids=types, attention_mask=mask,
                                   start_positions=starts, end_positions=ends)
            trainer.update(output.loss, f"epoch {epoch + 1} ")


def tune_reader(items: Sequence[tuple[Window, int, int]], out: Path, *, epochs: int, lr: float,
                batch: int, seed: int, threads: int, summary: dict[str, Any],
                report: Callable[[str], None] | None = None,
                start_from: Path | None = None) -> None:
    """Fine-tune the shipped reader (or ``start_from``) further on ``items`` (a window, its
    answer's start and end token, (0, 0) for no answer) and write the result as a reader file
    over the base encoder, like the shipped one: what runs it needs nothing else."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    from .finetuned import base_model_dir, quiet_pretrained
    from .reader import READER_WEIGHTS, build_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model_dir = base_model_dir()
    start_from = start_from or READER_WEIGHTS
    base = {k: v.detach().clone() for k, v in
            quiet_pretrained(AutoModelForQuestionAnswering, model_dir).named_parameters()}
    model = build_model(model_dir, start_from)
    rng = random.Random(seed)
    plan = [length_batches(items, batch, rng) for _ in range(epochs)]
    trainer = Trainer(model, lr, sum(len(p) for p in plan), report)
    train_spans(trainer, items, plan)
    trainer.ship("qa_outputs.", out, model_dir, {
        **summary, "tuned_from": file_sha256(start_from), "windows": len(items), "seed": seed,
        "epochs": epochs, "batch": batch, "lr": lr, "steps": trainer.steps,
        "threads": torch.get_num_threads(), "torch": torch.__version__}, base=base)
