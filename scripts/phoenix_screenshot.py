"""Take the screenshot of a ragcli trace in Arize Phoenix's UI that docs/observability.md shows.

Starts ``phoenix serve`` on 127.0.0.1 (from ``.ragcli/phoenix-venv``, made by scripts/test, or
``--phoenix``), answers a few handbook questions with the real embedder and model while exporting
live (``RAGCLI_OTLP_ENDPOINT``), then opens the first one's trace in headless Chromium (Debian's
``chromium`` package) through Phoenix's ``/redirects/traces/<trace ID>`` and writes a PNG.
Usage: python scripts/phoenix_screenshot.py [--out docs/img/phoenix-trace.png] [--store DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from otlp_receiver import start_phoenix  # noqa: E402

QUESTIONS = ["How many weeks of paid parental leave do non-birthing parents get?",
             "How long is a final written warning valid?",
             "What is the capital of France?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "phoenix-trace.png")
    parser.add_argument("--phoenix", type=Path,
                        default=ROOT / ".ragcli" / "phoenix-venv" / "bin" / "phoenix")
    parser.add_argument("--store", type=Path, default=ROOT / ".ragcli" / "store")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragcli-phoenix-"))
    try:
        phoenix, url = start_phoenix(args.phoenix, work)
    except RuntimeError as exc:
        sys.exit(str(exc))
    try:
        ids = []
        for question in QUESTIONS:
            out = subprocess.run([sys.executable, "-m", "ragcli", "ask", question, "--json",
                                  "--store", str(args.store)], capture_output=True, text=True,
                                 env={**os.environ, "RAGCLI_OTLP_ENDPOINT": url,
                                      "RAGCLI_AUDIT": str(work / "audit.sqlite3")}, check=True)
            ids.append(json.loads(out.stdout)["request_id"])
        time.sleep(3)  # Phoenix ingests in the background
        args.out.parent.mkdir(parents=True, exist_ok=True)
        trace = ids[0].replace("-", "")
        subprocess.run([args.chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                        f"--user-data-dir={work / 'chromium'}", "--window-size=1600,1000",
                        "--virtual-time-budget=20000", f"--screenshot={args.out}",
                        f"{url}/redirects/traces/{trace}"], check=True, capture_output=True,
                       timeout=180)
        print(f"wrote {args.out}: the trace of request {ids[0]} in Phoenix")
    finally:
        phoenix.terminate()
        phoenix.wait(timeout=30)


if __name__ == "__main__":
    main()
