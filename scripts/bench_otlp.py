"""What live OpenTelemetry export costs, side by side in one run; prints one JSON line.

- warm: two `ragcli chat --json` processes on the same store and questions, one exporting each
  answer live to an OTLP/HTTP receiver on 127.0.0.1 (it decodes the protobuf, as a collector
  does), one not; questions go to both in turn (the order swapped every question), and the time
  of an answer is from writing the question to reading its JSON line. p50 of each, and of the
  per-question difference.
- cold: one `ragcli ask` process per question with ``otlp_endpoint`` at a port nothing listens
  on (a collector that is down) against none, interleaved; median wall time of each.
Usage: bench_otlp.py STORE [--questions 20] [--cold 7] [--mode extractive]
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
sys.path.insert(0, str(ROOT / "tests"))

from otlp_receiver import Receiver, closed_url  # noqa: E402


def chat(store: Path, mode: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ragcli", "chat", "--json", "--mode", mode,
                             "--store", str(store)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **env})


def one(proc: subprocess.Popen[str], question: str) -> float:
    assert proc.stdin is not None and proc.stdout is not None
    start = time.perf_counter()
    proc.stdin.write(question.replace("\n", " ") + "\n")
    proc.stdin.flush()
    json.loads(proc.stdout.readline())
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", type=Path)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--cold", type=int, default=7)
    parser.add_argument("--mode", default="extractive")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragcli-otlp-"))
    cases = [json.loads(line) for line in
             (ROOT / "goldens" / "handbook.jsonl").read_text(encoding="utf-8").splitlines()]
    questions = [c["question"] for c in cases if not c.get("groups")][:args.questions]
    result: dict[str, object] = {"questions": len(questions), "mode": args.mode}
    with Receiver() as receiver:
        procs = {
            "export": chat(args.store, args.mode, {"RAGCLI_AUDIT": str(work / "a.sqlite3"),
                                                   "RAGCLI_OTLP_ENDPOINT": receiver.url}),
            "none": chat(args.store, args.mode, {"RAGCLI_AUDIT": str(work / "b.sqlite3")})}
        times: dict[str, list[float]] = {"export": [], "none": []}
        for n, question in enumerate(questions):
            for name in (("export", "none") if n % 2 else ("none", "export")):
                times[name].append(one(procs[name], question))
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=120)
        deltas = [a - b for a, b in zip(times["export"][1:], times["none"][1:], strict=True)]
        result["warm"] = {"export_p50_ms": statistics.median(times["export"][1:]),
                          "none_p50_ms": statistics.median(times["none"][1:]),
                          "delta_p50_ms": statistics.median(deltas),
                          "traces_received": len({s["trace_id"] for s in receiver.spans})}
    down = closed_url()
    cold: dict[str, list[float]] = {"down": [], "none": []}
    for n in range(args.cold):
        for name in (("down", "none") if n % 2 else ("none", "down")):
            env = {**os.environ, "RAGCLI_AUDIT": str(work / "cold.sqlite3")}
            if name == "down":
                env["RAGCLI_OTLP_ENDPOINT"] = down
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ragcli", "ask", questions[n % len(questions)],
                            "--mode", args.mode, "--store", str(args.store)], env=env,
                           capture_output=True, check=True)
            cold[name].append((time.perf_counter() - start) * 1000)
    result["cold"] = {"down_p50_ms": statistics.median(cold["down"]),
                      "none_p50_ms": statistics.median(cold["none"]),
                      "delta_p50_ms": statistics.median(cold["down"]) - statistics.median(
                          cold["none"]), "runs": args.cold}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
