"""See scripts/bench_answers: answer quality per mode, the SQuAD way, on two golden sets.

Each set gets a store of its own under .ragcli/bench (the handbook; squad-a's 868 paragraphs), each
mode answers every golden case through the same ``evaluate()`` the eval gate runs, and one row per
(set, mode) reports exact match and token F1 over the answerable cases (refusals count as 0), how
many answers were right, wrong and refused, the wrong-answer rate (wrong of the answers given),
absent-topic refusals, citation validity, latency and tokens per answer.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ragcli.answer.answering import Answerer
from ragcli.evaluate.evaluation import evaluate, load_goldens
from ragcli.ingest.indexing import reindex
from ragcli.runtimes.embedder import get_embedder
from ragcli.runtimes.generation import LlamaCppGenerator
from ragcli.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SQUAD = ROOT.parent / "shared" / "data" / "squad-a"
COLUMNS = ("set", "mode", "adapter", "cases", "EM", "F1", "right", "wrong", "refused", "wrong rate",
           "absent refused", "presence", "cites ok", "p50 ms", "tokens")


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
            f"{m.get('latency_total_p50_ms', 0):.0f}", f"{m.get('tokens_per_answer_p50', 0):.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="auto,extractive,generative")
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
        for mode in args.modes.split(","):
            for adapter in args.adapters.split(",") if mode != "extractive" else ["-"]:
                settings = Settings(store=store, mode=mode,
                                    audit=bench / f"answers-audit-{mode}.sqlite3",  # one per mode:
                                    adapter="none" if adapter == "-" else adapter)  # runs in parallel
                answerer = Answerer(settings, embedder,
                                    lambda s=settings: LlamaCppGenerator.from_settings(s))
                start = time.perf_counter()
                result = evaluate(cases, answerer)
                print(f"{name} {mode} adapter={adapter}: {len(cases)} cases in "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
                label = adapter if adapter in ("-", "none") else \
                    str(LlamaCppGenerator.from_settings(settings).adapter_path or "none (default)")
                rows.append(row(name, mode, Path(label).name, len(cases), result.metrics))
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    print()
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
