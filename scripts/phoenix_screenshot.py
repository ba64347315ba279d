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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["How many weeks of paid parental leave do non-birthing parents get?",
             "How long is a final written warning valid?",
             "What is the capital of France?"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "phoenix-trace.png")
    parser.add_argument("--phoenix", type=Path,
                        default=ROOT / ".ragcli" / "phoenix-venv" / "bin" / "phoenix")
    parser.add_argument("--store", type=Path, default=ROOT / ".ragcli" / "store")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragcli-phoenix-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(work), "PHOENIX_HOST": "127.0.0.1",
           "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(free_port()),
           "PHOENIX_TELEMETRY_ENABLED": "false"}
    phoenix = subprocess.Popen([str(args.phoenix), "serve"], env=env,
                               stdout=(work / "phoenix.log").open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=2).close()  # noqa: S310
                break
            except OSError:
                if phoenix.poll() is not None or time.monotonic() > deadline:
                    sys.exit("phoenix serve did not start: " + (work / "phoenix.log").read_text())
                time.sleep(0.5)
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
