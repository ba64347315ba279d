"""Tokens/s of llama-cpp-python called directly: the reference for `ragcli ask`'s generation.

Usage: bench_llama_direct.py MODEL PROMPT_JSON MAX_TOKENS THREADS N_CTX; prints one JSON line.
Same settings as ragcli's generator: greedy, seed 42, the given threads and context, streaming.
Three runs in one process; the first (what a cold `ask` does) is compared."""

import json
import sys
import time

from llama_cpp import Llama

model, prompt, max_tokens, threads, n_ctx = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), int(sys.argv[5])
llama = Llama(model_path=model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, seed=42,
              verbose=False)
runs, firsts = [], []
for _ in range(3):
    llama.reset()
    start = time.perf_counter()
    first = None
    tokens = 0
    for part in llama.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_p=1.0,
                                        top_k=1, repeat_penalty=1.0, seed=42, stream=True):
        if part["choices"][0].get("text"):
            tokens += 1
            first = first or time.perf_counter()
    end = time.perf_counter()
    firsts.append((first or end) - start)
    runs.append((tokens - 1) / max(end - (first or end), 1e-9))  # decode rate, prefill excluded
# the first run is the one to compare with a cold `ask` (a new process generates once); the
# median of three is reported too
print(json.dumps({"tokens_per_s": runs[0], "first_token_s": firsts[0], "tokens": tokens,
                  "median_tokens_per_s": sorted(runs)[1], "median_first_token_s": sorted(firsts)[1]}))
