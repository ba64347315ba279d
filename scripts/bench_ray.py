"""See scripts/bench_ray: per-worker ingest throughput of --engine ray, next to the local engine."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from ragcli.cpu import usable_cores
from ragcli.ingest.distributed import RayEngine
from ragcli.ingest.indexing import LocalEngine, index_paths
from ragcli.runtimes.embedder import get_embedder
from ragcli.settings import Settings

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "corpus.jsonl"


class Recording(LocalEngine):
    """The local engine, keeping what it hands to the writer."""

    def __init__(self) -> None:
        self.commits: list = []  # type: ignore[type-arg]

    def prepare(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        for commit in super().prepare(*args, **kwargs):
            self.commits.append(commit)
            yield commit


class Replaying(LocalEngine):
    """Hands the recorded chunks and vectors to the writer again: times the commit path alone."""

    def __init__(self, commits: list) -> None:  # type: ignore[type-arg]
        self.commits = commits

    def prepare(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        yield from self.commits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT, help="BEIR corpus.jsonl")
    parser.add_argument("--docs", type=int, default=1000, help="first N documents (0 = all)")
    parser.add_argument("--workers", default="1,2", help="embedding actors to try, e.g. 1,2")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if not args.corpus.is_file():
        raise SystemExit(f"bench_ray: corpus not found: {args.corpus} (pass a BEIR corpus.jsonl)")
    import ray

    cores = usable_cores(limit=64)
    ray.init(num_cpus=cores, include_dashboard=False, configure_logging=False, log_to_driver=False)
    logging.getLogger("ray").setLevel(logging.ERROR)
    embedder = get_embedder(Settings().embedder)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        with args.corpus.open(encoding="utf-8") as source, corpus.open("w", encoding="utf-8") as out:
            for n, line in enumerate(source):
                if args.docs and n >= args.docs:
                    break
                out.write(line)
        runs: dict[str, list[tuple[float, int]]] = {}
        plans = [("local", None)] + [(f"ray, {w} worker{'s' * (w > 1)}", w)
                                     for w in map(int, args.workers.split(","))]
        for attempt in range(args.repeat):  # interleaved, so drift hits every row alike
            for label, workers in plans:
                store = Path(tmp) / f"store-{attempt}-{workers}"
                engine = RayEngine(workers=workers) if workers else None
                start = time.perf_counter()
                report = index_paths([corpus], store, embedder, delete_missing=False, engine=engine)
                runs.setdefault(label, []).append((time.perf_counter() - start,
                                                   report.chunks_embedded))
        # the driver's share: committing the same chunks and vectors with nothing to embed
        recording = Recording()
        index_paths([corpus], Path(tmp) / "recorded", embedder, delete_missing=False,
                    engine=recording)
        commit_s = []
        for attempt in range(args.repeat):
            start = time.perf_counter()
            report = index_paths([corpus], Path(tmp) / f"replayed-{attempt}", embedder,
                                 delete_missing=False, engine=Replaying(recording.commits))
            commit_s.append(time.perf_counter() - start)
        runs["driver commit path only (no embedding)"] = [(s, report.chunks_written)
                                                          for s in commit_s]
        plans.append(("driver commit path only (no embedding)", None))
        for label, workers in plans:
            seconds = statistics.median(s for s, _ in runs[label])
            chunks = runs[label][0][1]
            per_worker = chunks / seconds / (workers or 1)
            rows.append({"engine": label, "seconds": round(seconds, 1), "chunks": chunks,
                         "chunks_per_s": round(chunks / seconds, 1),
                         "chunks_per_s_per_worker": round(per_worker, 1) if workers else None})
    ray.shutdown()
    print(f"\n--engine ray throughput, {args.docs or 'all'} SciFact documents, {cores} cores, "
          f"embedder {embedder.id.split('/')[1]}, median of {args.repeat} (interleaved)")
    print("| engine | wall s | chunks | chunks/s | chunks/s per worker |")
    print("|---|---|---|---|---|")
    for r in rows:
        note = f"(one process, {cores} threads)" if r["engine"] == "local" else ""
        print(f"| {r['engine']} | {r['seconds']} | {r['chunks']} | {r['chunks_per_s']} | "
              f"{r['chunks_per_s_per_worker'] or note} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
