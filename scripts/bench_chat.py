"""Conversation speed: `ragcli chat` answering question after question, and `ask --batch` against
one cold `ask` per question. Usage: bench_chat.py STORE [--questions 20]; prints one JSON line.

- chat: one `ragcli chat --json` process per mode, fed the handbook golden questions one at a
  time through a pipe (the next is written when the last answer's JSON line arrived); the time of
  a question is from writing it to reading its answer. Generative first token = that time minus
  what came after the first token (the answer's own timings).
- batch: `ragcli ask --batch FILE` over the same questions against one cold `ask` per question
  (all in the default mode), wall time of each side.
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


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(int(round(len(ordered) * 0.95)) - 1, 0)]


def chat(store: Path, mode: str, questions: list[dict], env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.Popen([sys.executable, "-m", "ragcli", "chat", "--json", "--mode", mode,
                             "--store", str(store)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **env})
    assert proc.stdin is not None and proc.stdout is not None
    walls, firsts = [], []
    for case in questions:
        start = time.perf_counter()
        proc.stdin.write(case["question"].replace("\n", " ") + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        wall = (time.perf_counter() - start) * 1000
        answer = json.loads(line)
        timings = answer.get("timings_ms") or {}
        after_first = timings.get("generation_generate", 0.0) - timings.get(
            "generation_first_token", timings.get("generation_generate", 0.0))
        walls.append(wall)
        firsts.append(wall - after_first)
    proc.stdin.close()
    proc.wait(timeout=120)
    rest = walls[1:]
    return {"first_question_ms": walls[0], "p50_ms": statistics.median(rest), "p95_ms": p95(rest),
            "first_token_p50_ms": statistics.median(firsts[1:]),
            "first_token_p95_ms": p95(firsts[1:])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", type=Path)
    parser.add_argument("--questions", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragcli-chat-"))
    env = {"RAGCLI_AUDIT": str(work / "audit.sqlite3"), "XDG_STATE_HOME": str(work / "state")}
    cases = [json.loads(line) for line in
             (ROOT / "goldens" / "handbook.jsonl").read_text(encoding="utf-8").splitlines()]
    cases = [c for c in cases if not c.get("groups")][:args.questions]
    result: dict[str, object] = {"questions": len(cases)}
    for mode in ("extractive", "auto", "generative"):
        result[f"chat_{mode}"] = chat(args.store, mode, cases, env)

    batch = work / "batch.jsonl"
    batch.write_text("".join(json.dumps({"question": c["question"]}) + "\n" for c in cases),
                     encoding="utf-8")
    ragcli = [sys.executable, "-m", "ragcli"]
    start = time.perf_counter()
    out = subprocess.run([*ragcli, "ask", "--batch", str(batch), "--store", str(args.store)],
                         capture_output=True, text=True, env={**os.environ, **env})
    batch_s = time.perf_counter() - start
    answered = sum(1 for line in out.stdout.splitlines() if line.strip())
    start = time.perf_counter()
    for case in cases:
        subprocess.run([*ragcli, "ask", case["question"], "--store", str(args.store), "--json"],
                       capture_output=True, text=True, env={**os.environ, **env})
    cold_s = time.perf_counter() - start
    result["batch"] = {"batch_s": batch_s, "cold_asks_s": cold_s, "answers": answered,
                       "speedup": cold_s / batch_s}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
