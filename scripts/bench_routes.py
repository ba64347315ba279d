"""See scripts/bench_routes: the small-versus-large thesis, measured in one run.

Each golden set (the handbook, squad-a's 300) gets the store bench_answers uses; the larger model
(``ragcli models install qwen-0.5b`` first) is served by llama-cpp-python's OpenAI-compatible
server on 127.0.0.1, started here. Five routes answer every case through the same ``evaluate()``
as the gate, in the default mode (``auto``):

- small: the local route, SmolLM2-135M in process choosing the span (today's default);
- reader: the extractive reader trained here (``span_reader = minilm``) alone, no GGUF model;
- small-first: the reader first (``--small-first-reader``; or SmolLM2 with ``gguf``), the served
  larger model when the small answer fails its checks or the reader's score is below
  ``min_reader_score`` (``--min-reader-score``; with SmolLM2, confidence below ``escalate_below``);
- large in process: the larger model as ``--model``, scoring the spans;
- large served: ``route = large`` to the server, which writes a span answer (mode auto: the
  candidate span of the extract's sentence that overlaps it best is shown).

One row each: EM and token F1 of the short answer, right, wrong rate, refused, latency p50 / p95 /
mean, CPU seconds and USD per query (the prices below), the share escalated. Then the targets:
small-first's F1 and mean latency against always-large's, in process and served.
Usage: scripts/bench_routes [--sets handbook,squad-a] [--limit N] [--model qwen-0.5b]
       [--routes small,reader,small-first,large,large-served] [--small-first-reader minilm]
       [--min-reader-score 4.44 | handbook=4.33,squad-a=2.56] [--escalate-below 0]
       [--usd-per-1k-prompt 0.0005] ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]

from bench_answers import SQUAD, sets  # noqa: E402

from otlp_receiver import free_port, start_server  # noqa: E402
from ragcli.answer.answering import Answerer  # noqa: E402
from ragcli.evaluate.evaluation import compute_metrics, evaluate, load_goldens, route_report  # noqa: E402
from ragcli.ingest.indexing import reindex  # noqa: E402
from ragcli.runtimes.catalog import installed_path  # noqa: E402
from ragcli.runtimes.embedder import get_embedder  # noqa: E402
from ragcli.runtimes.generation import LlamaCppGenerator  # noqa: E402
from ragcli.settings import Settings  # noqa: E402

COLUMNS = ("set", "route", "cases", "EM", "F1", "right", "wrong rate", "refused", "p50 ms",
           "p95 ms", "mean ms", "CPU s/q", "USD/q", "escalated")


def serve(model: Path, threads: int, context: int) -> tuple[subprocess.Popen[bytes], str]:
    """llama-cpp-python's server for ``model`` on 127.0.0.1; its base URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    try:
        proc = start_server([sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                             "--host", "127.0.0.1", "--port", str(port), "--model_alias", "large",
                             "--n_ctx", str(context), "--n_threads", str(threads), "--seed", "42"],
                            url + "/models",
                            Path(tempfile.mkdtemp(prefix="ragcli-serve-")) / "server.log",
                            timeout=300)
    except RuntimeError as exc:
        sys.exit(str(exc))
    return proc, url


def per_set(value: str) -> dict[str, float]:
    """``4.44`` -> {"": 4.44} (every set); ``handbook=4.33,squad-a=2.56`` -> one per set."""
    try:
        if "=" not in value:
            return {"": float(value)}
        return {k.strip(): float(v) for k, v in (p.split("=", 1) for p in value.split(","))}
    except ValueError:
        sys.exit(f"--min-reader-score: a number, or SET=NUMBER,...: not {value!r}")


def row(name: str, route: str, cases: int, results: list) -> list[str]:  # type: ignore[type-arg]
    m = compute_metrics(results)
    costs = route_report(results)["all"]
    totals = [r.timings_ms.get("total", 0.0) for r in results if not r.error]
    return [name, route, str(cases), f"{m.get('exact_match', 0):.3f}", f"{m.get('token_f1', 0):.3f}",
            f"{m.get('answered_right', 0):.0f}", f"{m.get('wrong_answer_rate', 0):.3f}",
            f"{m.get('refused_answerable', 0):.0f}", f"{costs['latency_p50_ms']:.0f}",
            f"{costs['latency_p95_ms']:.0f}", f"{statistics.fmean(totals) if totals else 0:.0f}",
            f"{costs['cpu_s_total'] / max(1, cases):.2f}", f"{costs['usd_per_query']:.6f}",
            f"{costs['escalated_share']:.0%}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="handbook,squad-a")
    parser.add_argument("--limit", type=int, default=0, help="the first N cases of each set")
    parser.add_argument("--squad", type=Path, default=SQUAD)
    parser.add_argument("--model", default="qwen-0.5b", help="the larger model (ragcli models)")
    parser.add_argument("--routes", default="small,reader,small-first,large,large-served")
    parser.add_argument("--small-first-reader", choices=("minilm", "gguf"), default="minilm",
                        help="small-first's small route: the extractive reader or SmolLM2's span choice")
    parser.add_argument("--min-reader-score", default=str(Settings().min_reader_score),
                        help="the reader's bar (small-first: below it, escalate): one value, or "
                             "one per set (handbook=4.33,squad-a=2.56: what eval --calibrate "
                             "--route small-first chose on each)")
    parser.add_argument("--escalate-below", type=float, default=0.0,
                        help="small-first with SmolLM2: escalate below this retrieval confidence")
    parser.add_argument("--usd-per-1k-prompt", type=float, default=0.0005)
    parser.add_argument("--usd-per-1k-completion", type=float, default=0.0015)
    parser.add_argument("--usd-per-cpu-hour", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                        help="the server's threads")
    args = parser.parse_args()
    large = installed_path(args.model) if not Path(args.model).is_file() else Path(args.model)
    routes = args.routes.split(",")
    base = Settings(usd_per_1k_prompt=args.usd_per_1k_prompt,
                    usd_per_1k_completion=args.usd_per_1k_completion,
                    usd_per_cpu_hour=args.usd_per_cpu_hour, large_model="large",
                    large_prompt_style="instruct",  # the served model is the Qwen GGUF
                    escalate_below=args.escalate_below)
    bars = per_set(args.min_reader_score)
    shipped = base.min_reader_score  # the reader alone refuses below the shipped bar
    server, url = serve(large, args.threads, base.large_context_tokens) \
        if {"small-first", "large-served"} & set(routes) else (None, None)
    embedder = get_embedder(base.embedder)
    bench = ROOT / ".ragcli" / "bench"
    rows: list[list[str]] = []
    summary: dict[tuple[str, str], dict[str, float]] = {}
    try:
        for name, (corpus, goldens) in sets(args.squad).items():
            if name not in args.sets.split(","):
                continue
            store = bench / f"answers-{name}-{base.embedder}"
            reindex([corpus], store, embedder)
            cases = load_goldens(goldens)[:args.limit or None]
            for route in routes:
                reader = {"reader": "minilm", "small-first": args.small_first_reader}
                settings = replace(base, store=store,
                                   audit=bench / f"routes-audit-{route}.sqlite3",
                                   route={"small": "local", "reader": "local", "large": "local",
                                          "small-first": "small-first",
                                          "large-served": "large"}[route],
                                   span_reader=reader.get(route, "gguf"),
                                   min_reader_score=bars.get(name, bars.get("", shipped))
                                   if route == "small-first" else shipped,
                                   model=large if route == "large" else None, large_url=url)
                answerer = Answerer(settings, embedder,
                                    lambda s=settings: LlamaCppGenerator.from_settings(s))
                start = time.perf_counter()
                results = evaluate(cases, answerer).cases
                print(f"{name} {route}: {len(cases)} cases in {time.perf_counter() - start:.0f} s",
                      flush=True)
                rows.append(row(name, route, len(cases), results))
                totals = [r.timings_ms.get("total", 0.0) for r in results if not r.error]
                summary[(name, route)] = {"f1": compute_metrics(results).get("token_f1", 0.0),
                                          "mean_ms": statistics.fmean(totals) if totals else 0.0}
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    print(f"\nlarger model {large.name}; prices: ${args.usd_per_1k_prompt}/1k prompt tokens, "
          f"${args.usd_per_1k_completion}/1k completion tokens (the large model's), "
          f"${args.usd_per_cpu_hour}/CPU hour (ragcli's own)")
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    for name in args.sets.split(","):
        first = summary.get((name, "small-first"))
        for route, how in (("large", "in process"), ("large-served", "served")):
            always = summary.get((name, route))
            if first and always and always["f1"] and always["mean_ms"]:
                print(f"{name}: small-first reaches {first['f1'] / always['f1']:.0%} of "
                      f"always-large's ({how}) F1 (target >= 95 %) at "
                      f"{first['mean_ms'] / always['mean_ms']:.0%} of its mean latency "
                      "(target <= 40 %)")


if __name__ == "__main__":
    main()
