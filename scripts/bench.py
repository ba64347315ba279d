"""See scripts/bench: ragcli's speed, side by side with LlamaIndex and raw llama-cpp-python.

Every row is measured in this one run, on this machine, on the same data; each timed command runs
in a fresh process unless the row says "warm". Medians of several runs where a row is cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "scifact"
QUESTION = "How many weeks of paid parental leave do non-birthing parents get?"


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """(wall seconds, stdout) of one child process."""
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 9):
        raise SystemExit(f"bench: {' '.join(args[:4])} failed ({proc.returncode}): {proc.stderr[-800:]}")
    return wall, proc.stdout


def peak_rss(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB from wait4(), stdout) of one child process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, text=True,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode not in (0, 9):
            raise SystemExit(f"bench: {' '.join(args[:4])} failed ({proc.returncode}): "
                             f"{err.read()[-800:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


def subset(corpus: Path, docs: int | None, work: Path) -> Path:
    if docs is None:
        return corpus
    path = work / f"corpus-{docs}.jsonl"
    with corpus.open(encoding="utf-8") as src, path.open("w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= docs:
                break
            dst.write(line)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT, help="BEIR directory")
    parser.add_argument("--docs", type=int, default=None, help="only the first N documents")
    parser.add_argument("--llamaindex-python", type=Path, default=None,
                        help="python of the benchmark's own venv with LlamaIndex (scripts/bench)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ann-sizes", default="100000,1000000",
                        help="store sizes of the vector-index rows ('' skips them: the 1 M store "
                             "takes ~30 min to write and index on 2 cores)")
    parser.add_argument("--ann-work", type=Path, default=None,
                        help="keep the vector-index stores here and reuse them (bench_ann.py)")
    args = parser.parse_args()
    ragcli = [sys.executable, "-m", "ragcli"]
    work = Path(tempfile.mkdtemp(prefix="ragcli-bench-"))
    env = {"RAGCLI_AUDIT": str(work / "audit.sqlite3"), "XDG_STATE_HOME": str(work / "state")}
    from ragcli.settings import load_settings

    settings = load_settings({}, environ={}, cwd=work)
    rows: list[tuple[str, str, str, str, str]] = []  # name, ragcli, reference, ratio, target

    # ---- --help --------------------------------------------------------------------------
    helps = [run([*ragcli, "--help"])[0] for _ in range(args.repeat)]
    help_s = statistics.median(helps)
    rows.append((f"`ragcli --help` (median of {args.repeat})", f"{help_s:.3f} s", "",
                 f"{help_s / 0.3:.2f} of target", "<= 0.3 s"))

    # ---- ask, cold: a new process per question, the handbook store --------------------------
    store = work / "handbook"
    run([*ragcli, "ingest", str(ROOT / "corpora" / "handbook"), "--store", str(store)], env)
    firsts, fulls, answers = [], [], []
    for _ in range(3):
        wall, out = run([*ragcli, "ask", QUESTION, "--store", str(store), "--json"], env)
        data = json.loads(out)
        timings = data["timings_ms"]
        after_first = (timings.get("generation_generate", 0.0)
                       - timings.get("generation_first_token", 0.0)) / 1000
        firsts.append(wall - after_first)
        fulls.append(wall)
        answers.append(data)
    first_s, full_s = statistics.median(firsts), statistics.median(fulls)
    rows.append(("`ask` cold: new process -> first token (median of 3)", f"{first_s:.2f} s", "",
                 f"{first_s / 2:.2f} of target", "<= 2 s"))
    rows.append(("`ask` cold: new process -> full answer (median of 3)", f"{full_s:.2f} s", "", "",
                 ""))

    # ---- generation: ragcli vs llama-cpp-python called directly, same model and prompt -------
    record = json.loads(run([*ragcli, "traces", "show", answers[-1]["request_id"], "--json"],
                            env)[1])
    # the ask's own answer is a handful of tokens, too short to resolve 5 %: both sides decode a
    # long summary of the same recorded passages in one process, alternately (bench_generation.py)
    passages = record["prompt"]["messages"][-1][1].split("\n\nQuestion: ")[0]
    gen = json.loads(run([sys.executable, str(ROOT / "scripts" / "bench_generation.py"),
                          json.dumps(passages), "--runs", "5"])[1])
    ours, direct = gen["ragcli"], gen["direct"]
    rows.append(("prefill of the same prompt: ragcli vs llama-cpp-python direct (median of 5)",
                 f"{ours['prefill_s']:.2f} s", f"{direct['prefill_s']:.2f} s",
                 f"{ours['prefill_s'] / direct['prefill_s']:.2f}", ""))
    rows.append((f"decode tok/s, {ours['tokens']} tokens: ragcli vs llama-cpp-python direct "
                 "(median of 5)", f"{ours['decode_tokens_per_s']:.1f}",
                 f"{direct['decode_tokens_per_s']:.1f}",
                 f"{ours['decode_tokens_per_s'] / direct['decode_tokens_per_s']:.2f}",
                 "within 5 % (>= 0.95)"))
    if "forced" in gen:
        forced = gen["forced"]
        rows.append((f"decode tok/s, the same {forced['tokens']} tokens forced: with the shipped "
                     "adapter vs without (median of 5 pairs)",
                     f"{forced['adapter_tokens_per_s']:.1f}", f"{forced['base_tokens_per_s']:.1f}",
                     f"{forced['ratio_median']:.2f}", "within 10 % (>= 0.90)"))

    # ---- ingest SciFact: ragcli vs a LlamaIndex IngestionPipeline -----------------------------
    corpus = subset(args.data / "corpus.jsonl", args.docs, work)
    what = f"{args.docs} docs" if args.docs else "all docs"
    scifact = work / "scifact"
    wall, rss, out = peak_rss([*ragcli, "ingest", str(corpus), "--store", str(scifact), "--json"], env)
    report = json.loads(out)
    chunks = report["chunks_written"]
    if args.llamaindex_python:
        li_wall, li_rss, li_out = peak_rss([str(args.llamaindex_python),
                                            str(ROOT / "scripts" / "_bench_llamaindex.py"),
                                            str(corpus), str(work / "llamaindex")])
        li = json.loads(li_out.strip().splitlines()[-1])
        rows.append((f"ingest SciFact ({what}): wall time, ragcli vs LlamaIndex",
                     f"{wall:.0f} s ({chunks} chunks)", f"{li_wall:.0f} s ({li['nodes']} nodes)",
                     f"{li_wall / wall:.2f}x faster", ">= 2x faster"))
        rows.append((f"ingest SciFact ({what}): peak RSS, ragcli vs LlamaIndex", f"{rss:.0f} MB",
                     f"{li_rss:.0f} MB", f"{rss / li_rss:.2f}", ""))
    else:
        rows.append((f"ingest SciFact ({what}): wall time", f"{wall:.0f} s ({chunks} chunks)",
                     "(LlamaIndex not run)", "", ""))
        rows.append((f"ingest SciFact ({what}): peak RSS", f"{rss:.0f} MB", "", "", ""))

    # ---- no-op reindex ----------------------------------------------------------------------
    noops = [run([*ragcli, "reindex", str(corpus), "--store", str(scifact), "--json"], env)[0]
             for _ in range(3)]
    noop = statistics.median(noops)
    rows.append((f"no-op reindex SciFact ({what}), new process (median of 3)", f"{noop:.2f} s", "",
                 f"{noop / 2:.2f} of target", "<= 2 s"))

    # ---- warm retrieval ---------------------------------------------------------------------
    warm = json.loads(run([sys.executable, str(ROOT / "scripts" / "_bench_warm_retrieval.py"),
                           str(scifact), str(args.data)])[1])
    rows.append((f"warm retrieval p50 / p95, hybrid, {warm['queries']} SciFact queries, "
                 "vectors held (chat, ask --batch) vs through lance (one ask)",
                 f"{warm['held_p50_ms']:.1f} / {warm['held_p95_ms']:.1f} ms",
                 f"{warm['lance_p50_ms']:.1f} / {warm['lance_p95_ms']:.1f} ms",
                 f"{warm['held_p95_ms'] / 15:.2f} of target", "p95 <= 15 ms"))
    rows.append(("holding the vectors of those 12.6 k chunks (once per chat or batch)",
                 f"{warm['hold_ms']:.0f} ms", "", "", ""))

    # ---- chat and batch: everything warm in one process ------------------------------------
    talk = json.loads(run([sys.executable, str(ROOT / "scripts" / "bench_chat.py"), str(store)],
                          env)[1])
    n = talk["questions"]
    for mode, target in (("extractive", 150), ("auto", None)):
        chat = talk[f"chat_{mode}"]
        rows.append((f"`chat` {mode} answers after the first, p50 / p95 ({n - 1} questions)",
                     f"{chat['p50_ms']:.0f} / {chat['p95_ms']:.0f} ms",
                     f"{chat['first_question_ms']:.0f} ms (first)",
                     f"{chat['p95_ms'] / target:.2f} of target" if target else "",
                     f"p95 <= {target} ms" if target else ""))
    chat = talk["chat_generative"]
    rows.append((f"`chat` generative first token after the first, p50 / p95 ({n - 1} questions)",
                 f"{chat['first_token_p50_ms']:.0f} / {chat['first_token_p95_ms']:.0f} ms", "",
                 f"{chat['first_token_p95_ms'] / 1500:.2f} of target", "p95 <= 1500 ms"))
    batch = talk["batch"]
    rows.append((f"`ask --batch` of {n} questions vs {n} cold `ask`s (default mode)",
                 f"{batch['batch_s']:.1f} s", f"{batch['cold_asks_s']:.1f} s",
                 f"{batch['speedup']:.1f}x faster", ">= 5x faster"))

    # ---- live OpenTelemetry export: a warm chat answer, a cold ask with the collector down -------
    otlp = json.loads(run([sys.executable, str(ROOT / "scripts" / "bench_otlp.py"), str(store)],
                          env)[1])
    warm_otlp, cold_otlp = otlp["warm"], otlp["cold"]
    rows.append((f"`chat` {otlp['mode']} answer p50 with live OTLP export vs without "
                 f"({otlp['questions'] - 1} questions, interleaved)",
                 f"{warm_otlp['export_p50_ms']:.1f} ms", f"{warm_otlp['none_p50_ms']:.1f} ms",
                 f"+{warm_otlp['delta_p50_ms']:.1f} ms", "<= +5 ms"))
    rows.append((f"cold `ask` p50, OTLP collector down vs no export ({cold_otlp['runs']} each)",
                 f"{cold_otlp['down_p50_ms']:.0f} ms", f"{cold_otlp['none_p50_ms']:.0f} ms",
                 f"+{cold_otlp['delta_p50_ms']:.0f} ms", "<= +50 ms"))

    # ---- the vector index at 100 k and 1 M chunks ----------------------------------------------
    if args.ann_sizes:
        ann_args = [sys.executable, str(ROOT / "scripts" / "bench_ann.py"), str(args.data),
                    "--sizes", args.ann_sizes]
        if args.ann_work:
            ann_args += ["--work", str(args.ann_work)]
        for line in run(ann_args)[1].splitlines():
            ann = json.loads(line)
            if "chunks" not in ann:
                continue
            size = f"{ann['chunks'] // 1000:,} k" if ann["chunks"] < 1_000_000 else \
                f"{ann['chunks'] / 1e6:g} M"
            kind = "real SciFact" if ann["real"] == ann["chunks"] else \
                f"{ann['real'] // 1000} k real + synthetic"
            target = 15 if ann["chunks"] <= 100_000 else 50
            rows.append((f"vector index at {size} chunks ({kind}): recall@10 of the flat scan, "
                         "ACL prefilter", f"{ann['recall_at_10']:.3f}", "", "",
                         ">= 0.95"))
            rows.append((f"vector leg p95 at {size} chunks: {ann['index']['type']} vs flat scan",
                         f"{ann['vector_leg_ann_p95_ms']:.1f} ms",
                         f"{ann['vector_leg_flat_p95_ms']:.1f} ms",
                         f"{ann['vector_leg_flat_p95_ms'] / ann['vector_leg_ann_p95_ms']:.1f}x "
                         "faster", ""))
            if "held_hybrid_p95_ms" in ann:  # chat and ask --batch hold the vectors
                rows.append((f"warm hybrid retrieval p50 / p95 at {size} chunks, ACL prefilter, "
                             "vectors held (chat, ask --batch) vs through lance (one ask)",
                             f"{ann['held_hybrid_p50_ms']:.1f} / {ann['held_hybrid_p95_ms']:.1f} ms",
                             f"{ann['hybrid_p50_ms']:.1f} / {ann['hybrid_p95_ms']:.1f} ms",
                             f"{ann['held_hybrid_p95_ms'] / target:.2f} of target",
                             f"p95 <= {target} ms"))
                if "held_alone_p95_ms" in ann:
                    rows.append((f"at {size} chunks, vectors held, one query after another with no lance "
                                 "query between (as a chat process runs)",
                                 f"{ann['held_alone_p50_ms']:.1f} / {ann['held_alone_p95_ms']:.1f} ms",
                                 "", f"{ann['held_alone_p95_ms'] / target:.2f} of target",
                                 f"p95 <= {target} ms"))
                rows.append((f"holding {size} chunks: time, memory; recall@10 of the flat scan",
                             f"{ann['hold_s']:.1f} s, {ann['hold_rss_mb']:.0f} MB; "
                             f"{ann['held_recall_at_10']:.3f}", "", "", ""))
            else:
                rows.append((f"warm hybrid retrieval p50 / p95 at {size} chunks, ACL prefilter",
                             f"{ann['hybrid_p50_ms']:.1f} / {ann['hybrid_p95_ms']:.1f} ms", "",
                             f"{ann['hybrid_p95_ms'] / target:.2f} of target",
                             f"p95 <= {target} ms"))

    print(f"\nragcli benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
          f"embedder {settings.embedder}, model {Path(record['model']['path']).name}")
    widths = [max(len(r[i]) for r in rows + [("measurement", "ragcli", "reference", "ratio",
                                              "target")]) for i in range(5)]
    header = ("measurement", "ragcli", "reference", "ratio", "target")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
