"""See scripts/bench_answers: answer quality per mode, the SQuAD way, on two golden sets.

Each set gets a store of its own under .ragcli/bench (the handbook; squad-a's 868 paragraphs), each
mode answers every golden case through the same ``evaluate()`` the eval gate runs, and one row per
(set, mode) reports exact match and token F1 over the answerable cases (refusals count as 0), how
many answers were right, wrong and refused, the wrong-answer rate (wrong of the answers given),
absent-topic refusals, citation validity, latency and tokens per answer. Mode ``auto`` is the
extractive reader (``span_reader = minilm``, the default); ``auto:gguf`` is the GGUF model
choosing the span (as before the reader). Every ``auto`` row is followed by the reader's
risk-coverage table: the wrong-answer rate at each share of answerable questions answered, the
highest reader scores first (evaluation.calibration.risk_coverage).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from ragcli.answer.answering import Answerer
from ragcli.evaluate.calibration import risk_coverage
from ragcli.evaluate.evaluation import evaluate, load_goldens
from ragcli.ingest.indexing import reindex
from ragcli.runtimes.embedder import get_embedder
from ragcli.runtimes.generation import LlamaCppGenerator
from ragcli.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SQUAD = ROOT.parent / "shared" / "data" / "squad-a"
COLUMNS = ("set", "mode", "adapter", "cases", "EM", "F1", "right", "wrong", "refused", "wrong rate",
           "absent refused", "presence", "cites ok", "p50 ms", "p95 ms", "span p50", "span p95",
           "tokens")


def sets(squad: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (corpus to index, golden set)."""
    out = {"handbook": (ROOT / "corpora" / "handbook", ROOT / "goldens" / "handbook.jsonl")}
    if (squad / "corpus.jsonl").is_file():
        out["squad-a"] = (squad / "corpus.jsonl", squad / "goldens.jsonl")
    return out


def row(name: str, mode: str, adapter: str, cases: int, m: dict[str, float]) -> list[str]:
    def pct(key: str) -> str:
        return f"{m[key]:.3f}" if key in m else "-"

    return [name, mode, adapter, str(cases), pct("exact_match"), pct("token_f1"),
            f"{m.get('answered_right', 0):.0f}", f"{m.get('wrong_answers', 0):.0f}",
            f"{m.get('refused_answerable', 0):.0f}", pct("wrong_answer_rate"),
            pct("absent_topic_refused"), pct("string_presence"), pct("citation_validity"),
            f"{m.get('latency_total_p50_ms', 0):.0f}", f"{m.get('latency_total_p95_ms', 0):.0f}",
            *(f"{m[k]:.0f}" if k in m else "-" for k in (  # the reader's, or the model's span choice
                *(f"latency_{'read' if 'latency_read_p50_ms' in m else 'span'}_{p}_ms"
                  for p in ("p50", "p95")),)),
            f"{m.get('tokens_per_answer_p50', 0):.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="auto,auto:gguf,extractive,generative",
                        help="auto (the reader), auto:gguf (the model picks the span), extractive, "
                        "generative")
    parser.add_argument("--sets", default="handbook,squad-a")
    parser.add_argument("--limit", type=int, default=0, help="the first N cases of each set")
    parser.add_argument("--squad", type=Path, default=SQUAD, help="the squad-a directory")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=CORPUS=GOLDENS",
                        help="another golden set over a corpus (repeat); name it in --sets too, "
                        "e.g. the halves scripts/split_articles.py writes")
    parser.add_argument("--adapters", default="default",
                        help="comma list: default (the shipped adapter), none, or GGUF paths")
    args = parser.parse_args()
    base = Settings()
    embedder = get_embedder(base.embedder)
    bench = ROOT / ".ragcli" / "bench"
    rows = []
    coverage = []
    chosen = sets(args.squad)
    for spec in args.set:
        name, corpus, goldens = spec.split("=", 2)
        chosen[name] = (Path(corpus), Path(goldens))
    for name, (corpus, goldens) in chosen.items():
        if name not in args.sets.split(","):
            continue
        # one store per corpus (the squad-a halves share squad-a's)
        key = next(n for n, (c, _) in chosen.items() if c.resolve() == corpus.resolve())
        store = bench / f"answers-{key}-{base.embedder}"
        reindex([corpus], store, embedder)
        cases = load_goldens(goldens)[:args.limit or None]
        for spec in args.modes.split(","):
            mode, _, reader = spec.partition(":")
            uses_model = mode == "generative" or (mode == "auto" and reader == "gguf")
            for adapter in args.adapters.split(",") if uses_model else ["-"]:
                settings = Settings(store=store, mode=mode, span_reader=reader or "minilm",
                                    audit=bench / f"answers-audit-{spec}.sqlite3",  # one per mode:
                                    adapter="none" if adapter == "-" else adapter)  # runs in parallel
                answerer = Answerer(settings, embedder,
                                    lambda s=settings: LlamaCppGenerator.from_settings(s))
                start = time.perf_counter()
                result = evaluate(cases, answerer)
                print(f"{name} {spec} adapter={adapter}: {len(cases)} cases in "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
                label = adapter if adapter in ("-", "none") else \
                    str(LlamaCppGenerator.from_settings(settings).adapter_path or "none (default)")
                rows.append(row(name, spec, Path(label).name, len(cases), result.metrics))
                if answerer.uses_reader:  # every case read with no bar: the whole trade-off
                    unbarred = evaluate(cases, answerer.with_settings(
                        replace(settings, min_reader_score=-1e9))).cases
                    coverage.append((name, risk_coverage(unbarred)))
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    print()
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    for name, table in coverage:
        print(f"\n{name}: risk-coverage of the reader's score (mode auto)")
        print("answered  min_reader_score  right  wrong  wrong rate  absent answered")
        for r in table:
            print(f"{r['answered']:>8.0%}  {r['threshold']:>16.3f}  {r['right']:>5.0f}  "
                  f"{r['wrong']:>5.0f}  {r['wrong_rate']:>10.3f}  {r['absent_answered']:>15.0f}")


if __name__ == "__main__":
    main()
