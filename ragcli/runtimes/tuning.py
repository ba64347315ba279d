"""``ragcli tune``: a LoRA grounding adapter for the GGUF model, trained on this CPU.

Four steps, each its own function so a test can run them on a few examples:

1. ``build_examples`` (evaluate/tuning.py, beside the eval of step 4): questions with gold
   answers (a BEIR-layout directory: corpus.jsonl, queries.jsonl with ``answers``,
   qrels/test.tsv) are asked of a store of that corpus through the real retriever and screening;
   the prompt is built by ``prompting.build_prompt``, byte for byte what ``ask`` gives the model
   in generative mode. The target is the gold span and the number of
   the first passage that holds it (``Liberal Party [2]``), or ``I don't know.`` when no passage
   does. Hard cases are made on purpose: the passages shuffled (the answer in passage 2 or 3) and
   the question's own document taken out of the results (nothing holds the answer).
2. ``train``: the GGUF file is loaded by transformers (dequantised to fp32: the same weights the
   runtime multiplies), a peft LoRA is trained on the target tokens only, one example at a time
   with gradient accumulation, checkpointed so an interrupted run resumes where it stopped.
3. ``write_adapter``: the LoRA tensors are written as a llama.cpp GGUF adapter (``lora_a``/``lora_b``
   per weight, q and k rows permuted back to GGUF's rotary layout, ``adapter.lora.alpha``).
4. ``cli/tune.py`` evaluates base vs adapter on golden sets before it calls the adapter better.

torch, transformers and peft (``pip install 'ragcli[tune]'``) are imported inside the functions
that need them; ``ask`` never imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError, UsageError

TUNE_PACKAGES = ("torch", "transformers", "peft")
# Hugging Face llama module name -> llama.cpp tensor name inside ``blk.N``
GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


@dataclass(frozen=True)
class TuneConfig:
    """Everything that decides the adapter's weights (with the examples and the base model)."""

    rank: int = 16
    alpha: float = 32.0
    modules: tuple[str, ...] = tuple(GGUF_NAMES)
    top_layers: int = 12  # LoRA on the last N blocks only: backward stops there (1.9x faster)
    learning_rate: float = 2e-4
    accumulate: int = 8  # examples per optimizer step
    warmup_steps: int = 10
    epochs: int = 1
    seed: int = 0
    threads: int = 0  # 0: the usable cores

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Example:
    question_id: str
    kind: str  # "answer" | "moved" (passages shuffled) | "absent" (own document removed)
    prompt: str  # the rendered prompt, exactly as ask builds it
    target: str  # what the model should write
    passages: tuple[str, ...] = field(default=())  # chunk ids, in prompt order


def missing_packages() -> list[str]:
    import importlib.util

    return [name for name in TUNE_PACKAGES if importlib.util.find_spec(name) is None]


def require_packages() -> None:
    missing = missing_packages()
    if missing:
        raise UsageError(f"ragcli tune needs {', '.join(missing)}: pip install 'ragcli[tune]'")


def encode(examples: Sequence[Example], model_path: Path) -> list[tuple[list[int], int]]:
    """Token ids (prompt + target + end of turn) by llama.cpp's own tokenizer, what the runtime
    reads, and the number of prompt tokens (the loss covers the rest)."""
    from llama_cpp import Llama

    vocab = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    end = vocab.token_eos()
    out = []
    for e in examples:
        prompt = vocab.tokenize(e.prompt.encode("utf-8"), add_bos=True, special=True)
        target = vocab.tokenize(e.target.encode("utf-8"), add_bos=False, special=False)
        out.append((prompt + target + [end], len(prompt)))
    return out


_BASES: dict[tuple[str, int, int], Any] = {}


def load_base(model_path: Path) -> Any:
    """The GGUF model as a transformers module, dequantised to fp32: a fresh copy of the one this
    process loaded before (dequantising takes 25 s; copying, under one)."""
    import copy

    stat = model_path.stat()
    key = (os.path.realpath(model_path), stat.st_size, stat.st_mtime_ns)
    if key not in _BASES:
        _BASES.clear()
        _BASES[key] = _dequantise(model_path)
    return copy.deepcopy(_BASES[key])


def _dequantise(model_path: Path) -> Any:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # tune shows its own progress
    import contextlib
    import io

    try:  # its dequantising progress bar (tqdm, not switchable) would interleave with tune's
        with contextlib.redirect_stderr(io.StringIO()):
            model = AutoModelForCausalLM.from_pretrained(model_path.parent,
                                                         gguf_file=model_path.name,
                                                         dtype=torch.float32)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise ModelError(f"transformers cannot load {model_path}: {exc}") from None
    if model.config.model_type != "llama":
        raise ModelError(f"ragcli tune supports llama-architecture GGUF models; {model_path.name} "
                         f"is {model.config.model_type}")
    return model


def attach_lora(model: Any, config: TuneConfig) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model

    layers = model.config.num_hidden_layers
    torch.manual_seed(config.seed)
    # peft annotates lora_alpha as int; it only ever divides by it, so a float scales the same
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha,  # type: ignore[arg-type]
                      lora_dropout=0.0,
                      target_modules=list(config.modules), task_type="CAUSAL_LM",
                      layers_to_transform=list(range(max(0, layers - config.top_layers), layers)))
    return get_peft_model(model, lora)


def example_loss(peft_model: Any, ids: list[int], prompt_tokens: int) -> Any:
    """Mean cross-entropy of the target tokens; the vocabulary projection runs on those
    positions only (on all 600 it costs as much as the LoRA layers' backward)."""
    import torch

    inner = peft_model.base_model.model
    tokens = torch.tensor([ids])
    hidden = inner.model(input_ids=tokens).last_hidden_state
    logits = inner.lm_head(hidden[0, prompt_tokens - 1:-1])
    return torch.nn.functional.cross_entropy(logits, tokens[0, prompt_tokens:])


def lora_tensors(peft_model: Any) -> dict[str, Any]:
    """peft's trainable tensors by their state-dict name."""
    return {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}


def train(encoded: Sequence[tuple[list[int], int]], model_path: Path, work: Path,
          config: TuneConfig, *, progress: Callable[[int, int, float], None] | None = None,
          stop_after: int | None = None) -> tuple[Any, dict[str, float]]:
    """Train a LoRA over ``encoded`` (``config.epochs`` passes, a seeded order); checkpoint to
    ``work/checkpoint.pt`` after every optimizer step's worth of examples, resume from it when
    its config and data match. Returns (the peft model, stats). ``stop_after``: stop after that
    many optimizer steps (a test of resuming)."""
    import torch

    threads = config.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    model = attach_lora(load_base(model_path), config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    order: list[int] = []
    for epoch in range(config.epochs):
        one = list(range(len(encoded)))
        random.Random(config.seed * 1000 + epoch).shuffle(one)
        order += one
    steps = max(1, -(-len(order) // config.accumulate))

    def rate(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        return max(0.0, (steps - step) / max(1, steps - config.warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    data_key = hashlib.sha256(json.dumps([e for e, _ in encoded]).encode()).hexdigest()[:16]
    checkpoint = work / "checkpoint.pt"
    step = 0
    losses: list[float] = []
    if checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=False)
        if saved.get("config") == config.key() and saved.get("data") == data_key:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if p.requires_grad:
                        p.copy_(saved["lora"][name])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            step, losses = saved["step"], saved["losses"]
    start = time.perf_counter()
    done_here = 0
    model.train()
    while step < steps:
        batch = order[step * config.accumulate:(step + 1) * config.accumulate]
        total = 0.0
        for index in batch:
            ids, prompt_tokens = encoded[index]
            loss = example_loss(model, ids, prompt_tokens) / len(batch)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        done_here += 1
        losses.append(total)
        work.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint.with_suffix(".tmp")
        torch.save({"config": config.key(), "data": data_key, "step": step, "losses": losses,
                    "lora": lora_tensors(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()}, tmp)
        os.replace(tmp, checkpoint)
        if progress is not None:
            progress(step, steps, total)
        if stop_after is not None and done_here >= stop_after:
            break
    model.eval()
    seconds = time.perf_counter() - start
    first = sum(losses[:10]) / max(1, len(losses[:10]))
    last = sum(losses[-10:]) / max(1, len(losses[-10:]))
    return model, {"steps": step, "of_steps": steps, "examples": len(encoded),
                   "seconds_this_run": seconds, "loss_first_10": first, "loss_last_10": last,
                   "threads": threads}


# --------------------------------------------------------------------------- GGUF adapter


def permute_rows(weights: Any, heads: int) -> Any:
    """HF's rotary layout -> llama.cpp's (convert_hf_to_gguf's ``permute``), on the output rows."""
    rows = weights.shape[0]
    return (weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def adapter_arrays(peft_model: Any) -> dict[str, Any]:
    """GGUF tensor name -> numpy array (``blk.N.attn_q.weight.lora_a`` ...)."""
    import re

    config = peft_model.base_model.model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    pattern = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.default\.weight$")
    out = {}
    for name, tensor in lora_tensors(peft_model).items():
        match = pattern.search(name)
        if not match:
            raise ModelError(f"unexpected LoRA tensor {name}")
        layer, module, part = match.groups()
        array = tensor.float().numpy()
        if part == "B" and module == "q_proj":
            array = permute_rows(array, heads)
        elif part == "B" and module == "k_proj":
            array = permute_rows(array, kv_heads)
        out[f"blk.{layer}.{GGUF_NAMES[module]}.weight.lora_{part.lower()}"] = array
    return out


def write_adapter(peft_model: Any, config: TuneConfig, path: Path, *,
                  metadata: dict[str, str] | None = None) -> None:
    """A llama.cpp LoRA adapter file (f16 tensors), written to a temporary name and renamed."""
    write_lora(adapter_arrays(peft_model), config.alpha, path, metadata=metadata)


def write_lora(arrays: dict[str, Any], alpha: float, path: Path, *,
               metadata: dict[str, str] | None = None) -> None:
    """``arrays`` (GGUF tensor name -> numpy array) as a llama.cpp LoRA adapter file, with
    ``metadata`` as ``ragcli.*`` strings (``base_sha256``: the model it fits, checked on load)."""
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    writer.add_name("ragcli grounding adapter")
    for key, value in sorted((metadata or {}).items()):
        writer.add_string(f"ragcli.{key}", value)
    for name, array in sorted(arrays.items(), key=lambda kv: _natural(kv[0])):
        writer.add_tensor(name, array.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)


def _natural(name: str) -> tuple[Any, ...]:
    parts = name.split(".")
    return (int(parts[1]) if parts[1].isdigit() else 0, name)


# ---- the steps of `ragcli tune` (cli/tune.py shows their progress) -----------------------------
def training_steps(examples: int, config: TuneConfig) -> int:
    """Optimizer steps of ``train`` over ``examples`` encoded examples."""
    return -(-examples * config.epochs // config.accumulate)


def adapter_metadata(base: Any, config: TuneConfig, kinds: dict[str, int],
                     command: str) -> dict[str, str]:
    """What an adapter file says of itself: the base model (name and SHA-256, which an adapter
    fits), the training configuration, the examples by kind and the command that made it."""
    return {"base_model": base.model_path.name, "base_sha256": base.model_sha256(),
            "config": json.dumps(config.__dict__, default=list, sort_keys=True),
            "examples": json.dumps(kinds, sort_keys=True), "command": command}
