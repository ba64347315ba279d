"""Decode and prefill rate: ragcli's generator vs llama-cpp-python called directly, in one process.

Usage: bench_generation.py PROMPT_JSON [--runs N] [--max-tokens N]; prints one JSON line.
The prompt is rendered by ragcli from the recorded passages of an `ask` with a request for a long
summary, so both sides decode the same ~max-tokens tokens (a 7-token answer cannot resolve 5 %).
Both sides load the same GGUF file with ragcli's settings (greedy, seed, threads, batch_threads,
n_ctx) and are run alternately, ragcli first then direct, N times each; medians are reported.

With an adapter (the shipped one by default; ``--adapter none`` skips it), the base model and the
model with the adapter also decode the same fixed tokens (the base model's summary), one token per
step as generation does: the adapter changes what the model writes, so only a forced sequence
compares the cost of a token."""

from __future__ import annotations

import argparse
import json
import statistics
import time

from llama_cpp import Llama

from ragcli.runtimes.generation import LlamaCppGenerator, resolve_adapter
from ragcli.settings import Settings

LONG_REQUEST = "Write a detailed summary of every passage above, at least 200 words, in full sentences."


def direct_run(llama: Llama, prompt: str, max_tokens: int, seed: int) -> tuple[float, float, int]:
    llama.reset()
    start = time.perf_counter()
    first, tokens = None, 0
    for part in llama.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_p=1.0,
                                        top_k=1, repeat_penalty=1.0, seed=seed, stream=True):
        if part["choices"][0].get("text"):
            tokens += 1
            first = first or time.perf_counter()
    end = time.perf_counter()
    return (first or end) - start, (tokens - 1) / max(end - (first or end), 1e-9), tokens


def forced_decode(llama: Llama, prompt: list[int], tokens: list[int]) -> float:
    """Tokens per second of evaluating ``tokens`` one at a time after ``prompt``."""
    llama.reset()
    llama.eval(prompt)
    start = time.perf_counter()
    for token in tokens:
        llama.eval([token])
    return len(tokens) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("passages", help="JSON string: the passages block of a recorded ask prompt")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--adapter", default="default", help="default | none | a GGUF adapter")
    args = parser.parse_args()
    settings = Settings()
    ours = LlamaCppGenerator(None, context_tokens=settings.context_tokens, threads=settings.threads,
                             batch_threads=settings.batch_threads, seed=settings.seed)
    prompt = ours.render([("system", "Answer using only the quoted passages."),
                          ("user", f"{json.loads(args.passages)}\n\n{LONG_REQUEST}")])
    theirs = Llama(model_path=str(ours.model_path), n_ctx=settings.context_tokens,
                   n_threads=settings.threads, n_threads_batch=ours.batch_threads, seed=settings.seed,
                   verbose=False)
    rows: dict[str, list[tuple[float, float, int]]] = {"ragcli": [], "direct": []}
    texts = set()
    for _ in range(args.runs):
        start = time.perf_counter()
        result = ours.generate(prompt, max_tokens=args.max_tokens, temperature=0.0, seed=settings.seed)
        first = result.timings_ms["first_token"] / 1000
        decode_s = (time.perf_counter() - start) - first
        rows["ragcli"].append((first, (result.tokens - 1) / max(decode_s, 1e-9), result.tokens))
        texts.add(result.text)
        rows["direct"].append(direct_run(theirs, prompt, args.max_tokens, settings.seed))
    out = {}
    for side, runs in rows.items():
        out[side] = {"prefill_s": statistics.median(r[0] for r in runs),
                     "decode_tokens_per_s": statistics.median(r[1] for r in runs),
                     "tokens": runs[0][2]}
    out["runs"] = args.runs
    out["deterministic"] = len(texts) == 1
    adapter = resolve_adapter(args.adapter, ours.model_path)
    if adapter is not None:
        forced = theirs.tokenize(sorted(texts)[0].encode("utf-8"), add_bos=False)
        prompt_ids = theirs.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        tuned = Llama(model_path=str(ours.model_path), n_ctx=settings.context_tokens,
                      n_threads=settings.threads, n_threads_batch=ours.batch_threads,
                      seed=settings.seed, verbose=False, lora_path=str(adapter))
        pairs = [(forced_decode(theirs, prompt_ids, forced), forced_decode(tuned, prompt_ids, forced))
                 for _ in range(args.runs)]
        out["forced"] = {"tokens": len(forced), "adapter": str(adapter),
                         "base_tokens_per_s": statistics.median(b for b, _ in pairs),
                         "adapter_tokens_per_s": statistics.median(a for _, a in pairs),
                         "ratio_median": statistics.median(a / b for b, a in pairs)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
