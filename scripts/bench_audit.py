"""What a durable audit record costs: three writes per request (start, prompt, completion, the
last one sealing it into the hash chain) with SQLite's synchronous=FULL against NORMAL,
interleaved in one run; median ms per request. Then ``traces verify`` over ``--verify`` records
(default 100,000, ~5 KB each like real ones; 0 skips it): median seconds of 3 walks.
Usage: python scripts/bench_audit.py [--requests 200] [--verify 100000] [--key]
       [--dir DIR (default: the audit log's)]"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

from ragcli.audit import chain
from ragcli.audit.trace import AuditLog, _row
from ragcli.settings import default_audit


def one_request(log: AuditLog, n: int, prompt: str) -> float:
    record = {"request_id": f"r{n}", "created_at": f"2026-11-22T00:00:{n:06d}", "user": "bench",
              "status": "answered", "refused": False, "question": "How many weeks of leave?"}
    start = time.perf_counter()
    log.start(record)
    log.update({**record, "prompt": {"text": prompt}})
    log.complete({**record, "prompt": {"text": prompt}, "answer": "16 weeks [1]"})
    return (time.perf_counter() - start) * 1000


def verify_time(directory: Path, count: int, key: bytes | None) -> None:
    """Fill a log with ``count`` sealed records in one transaction, then time whole walks."""
    prompt = "passage text " * 400
    with tempfile.TemporaryDirectory(dir=directory) as work:
        log = AuditLog(Path(work) / "verify.sqlite3", key)
        connection = log._connect()
        began = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        for n in range(count):
            record = {"request_id": f"r{n:07d}", "created_at": f"2026-11-22T00:00:{n:07d}",
                      "user": "bench", "status": "answered", "refused": False,
                      "question": "How many weeks of leave?", "prompt": {"text": prompt},
                      "answer": "16 weeks [1]"}
            chain.seal_row(connection, log.signer, _row(record), update=False)
        connection.execute("COMMIT")
        connection.close()
        size = log.path.stat().st_size / 1e6
        print(f"{count} sealed records ({size:.0f} MB) written in {time.perf_counter() - began:.1f} s")
        walks = []
        for _ in range(3):
            start = time.perf_counter()
            report = log.verify()
            walks.append(time.perf_counter() - start)
            assert report.ok and report.sealed == count, report.to_json()
        print(f"traces verify ({'HMAC-SHA-256' if key else 'SHA-256'}), {count} records: median "
              f"{statistics.median(walks):.2f} s of 3 ({', '.join(f'{w:.2f}' for w in walks)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=default_audit().parent)
    parser.add_argument("--verify", type=int, default=100_000, help="records to verify (0: skip)")
    parser.add_argument("--key", action="store_true", help="seal with a key (HMAC)")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    prompt = "passage text " * 400  # about the size of a real prompt (5 KB)
    times: dict[str, list[float]] = {"FULL": [], "NORMAL": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        logs = {mode: AuditLog(Path(work) / f"{mode}.sqlite3") for mode in times}
        real_connect = AuditLog._connect

        def connect(self: AuditLog):  # type: ignore[no-untyped-def]
            connection = real_connect(self)
            connection.execute(f"PRAGMA synchronous={self.path.stem}")
            return connection

        with mock.patch.object(AuditLog, "_connect", connect):
            for n in range(args.requests):
                for mode in times:  # interleaved: the disk's mood hits both alike
                    times[mode].append(one_request(logs[mode], n, prompt))
    print(f"{args.requests} requests, 3 writes each, in {args.dir}")
    for mode, values in times.items():
        print(f"synchronous={mode:<6}  median {statistics.median(values):6.2f} ms/request   "
              f"p95 {sorted(values)[int(0.95 * len(values))]:6.2f} ms")
    print(f"FULL / NORMAL: {statistics.median(times['FULL']) / statistics.median(times['NORMAL']):.2f}x")
    if args.verify:
        verify_time(args.dir, args.verify, b"bench key" if args.key else None)


if __name__ == "__main__":
    main()
