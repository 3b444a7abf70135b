"""Benchmark: the synthetic data generator streams to disk in bounded memory.

Usage (from the repository root; `make bench-generate` does this):
    uv run --project ingest python bench/generate.py [--transactions 10000000]

Generates about that many transactions (two years, the customer count chosen to match) in a
child process and prints rows, seconds, rows/s, bytes written and the child's peak RSS.
Target (issue 2): 10 M transactions in no more than a few hundred MB of memory.
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

PURCHASES_PER_CUSTOMER_DAY = 0.074  # what the generator's population averages (measured at 5 k customers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=10_000_000)
    args = parser.parse_args()
    customers = max(100, round(args.transactions / (PURCHASES_PER_CUSTOMER_DAY * 731)))
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        result_path = Path(tmp) / "result.json"
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest.cli", "generate", "--out", f"{tmp}/landing", "--customers", str(customers)],
            env={**os.environ, "PIPELINE_RESULT_PATH": str(result_path)},
            stdout=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        if status != 0:
            raise SystemExit(f"generate failed with status {status}")
        result = json.loads(result_path.read_text())
    rows = int(result["transactions"])
    figures = {
        "customers": customers,
        "transactions": rows,
        "seconds": round(seconds, 1),
        "rows_per_second": round(rows / seconds),
        "bytes_written_mb": round(result["bytes"] / 1e6, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }
    print(f"generate bench: {customers:,} customers over two years")
    print(f"  transactions written   {rows:>14,}")
    print(f"  time                   {seconds:>14.1f} s  ({figures['rows_per_second']:,} rows/s)")
    print(f"  written                {figures['bytes_written_mb']:>14,.1f} MB")
    print(f"  peak RSS               {figures['peak_rss_mb']:>14,.1f} MB  (target: a few hundred MB)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
