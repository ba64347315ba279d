"""What the training scripts share (train_reader.py, train_reranker.py): reading BEIR JSONL, padded
batches, the optimizer and its schedule, progress lines, and writing what training changed.
A helper, not an entry point."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragcli.paths import file_sha256
from ragcli.runtimes.finetuned import WEIGHTS_FORMAT, trained_tensors, write_weights

FROZEN = "bert.embeddings."  # the embeddings stay as shipped: the delta covers the layers only


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


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
    line every 50 steps."""

    def __init__(self, model: Any, lr: float, steps: int) -> None:
        import torch

        self.model, self.steps = model, steps
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
            print(f"  {label}step {self.step}/{self.steps} loss {self.running / block:.3f} "
                  f"{elapsed / 60:.1f} min (~{elapsed / self.step * (self.steps - self.step) / 60:.0f} "
                  "min left)", flush=True)
            self.running = 0.0

    @property
    def minutes(self) -> float:
        return (time.perf_counter() - self.began) / 60

    def ship(self, head: str, out: Path, model_dir: Path, summary: dict[str, Any]) -> None:
        """Write what training changed (runtimes/finetuned.py) with this run's ``summary``."""
        out.parent.mkdir(parents=True, exist_ok=True)
        write_weights(trained_tensors(self.model, self.base, head), out, {
            "ragcli.format": str(WEIGHTS_FORMAT),
            "ragcli.base_sha256": file_sha256(model_dir / "model.safetensors"),
            "ragcli.training": json.dumps(summary, sort_keys=True)})  # the same tensors, the same bytes
        print(f"trained in {self.minutes:.1f} min; wrote {out} ({out.stat().st_size / 1e6:.1f} MB) "
              f"sha256 {file_sha256(out)}", flush=True)
