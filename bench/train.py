"""Trainer benchmark: `trainer train` on synthetic training sets of 100k and 1M rows.

Each size gets its own database in the warehouse (embedded unless PG* is set), loaded with COPY;
then `python -m trainer.cli train` runs as a child process, exactly as the DAG runs it. Printed per
size: the classifier's own fit time, the child's total wall time (imports, COPY read, fit, ONNX
export and verification, evaluation, report, registry), and its peak RSS (getrusage of that child).

Targets (issue 4): at 1M rows, peak RSS <= 3 GB and total <= 2 x fit time.

    uv run --project trainer python bench/train.py [--rows 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from _common import conninfo
from mlp_common.embedded import ensure_warehouse
from mlp_common.warehouse import drop_database
from trainer.synthetic import load_training_set, make_training_set

DS = "2024-06-01"
RSS_TARGET_MB = 3 * 1024
RATIO_TARGET = 2.0


def bench(rows: int, server: dict[str, str], cutoffs: int) -> dict[str, float]:
    database = f"bench_trainer_{uuid.uuid4().hex[:8]}"
    admin = server.get("PGDATABASE", "postgres")
    with psycopg.connect(conninfo(server, admin), autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
    try:
        started = time.perf_counter()
        table = make_training_set(rows, cutoffs, seed=0)
        with psycopg.connect(conninfo(server, database)) as conn:
            load_training_set(conn, table)
        del table
        prepare_s = time.perf_counter() - started

        with tempfile.TemporaryDirectory() as tmp:
            result_path = Path(tmp) / "result.json"
            env = {
                **os.environ,
                **server,
                "PGDATABASE": database,
                "PIPELINE_RESULT_PATH": str(result_path),
                "PIPELINE_REPORTS_DIR": str(Path(tmp) / "reports"),
                "PIPELINE_LOG_LEVEL": "WARNING",
            }
            args = [sys.executable, "-m", "trainer.cli", "train", "--ds", DS, "--auc-floor", "0.5", "--tolerance", "0.0"]
            started = time.perf_counter()
            child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(child.pid, 0)
            total_s = time.perf_counter() - started
            stderr = child.stderr.read().decode() if child.stderr else ""
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"trainer failed at {rows} rows: {stderr.strip()}")
            result = json.loads(result_path.read_text())
    finally:
        with psycopg.connect(conninfo(server, admin), autocommit=True) as conn:
            drop_database(conn, database)
    timings = result["timings"]
    return {
        "rows": rows,
        "prepare_s": prepare_s,
        "fit_s": timings["fit_candidate_s"],
        "total_s": total_s,
        "in_process_s": timings["total_s"],
        "load_s": timings["load_s"],
        "onnx_s": timings["onnx_export_and_verify_s"],
        "evaluate_s": timings["evaluate_s"],
        "report_s": timings["report_s"],
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
        "candidate_auc": result["metrics"]["candidate"]["roc_auc"],
        "baseline_auc": result["metrics"]["baseline"]["roc_auc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--cutoffs", type=int, default=6, help="cutoff dates the rows are spread over (the latest is the holdout)")
    options = parser.parse_args()
    server = ensure_warehouse()
    print(
        f"{'rows':>9} {'fit s':>7} {'total s':>8} {'ratio':>6} {'peak RSS MB':>12}  breakdown (load/onnx/evaluate/report s)  AUC cand/base"
    )
    failures = []
    for rows in options.rows:
        r = bench(rows, server, options.cutoffs)
        ratio = r["total_s"] / r["fit_s"]
        print(
            f"{rows:>9,} {r['fit_s']:>7.1f} {r['total_s']:>8.1f} {ratio:>6.2f} {r['peak_rss_mb']:>12.0f}  "
            f"{r['load_s']:.1f}/{r['onnx_s']:.1f}/{r['evaluate_s']:.1f}/{r['report_s']:.1f}"
            f"{'':>24}{r['candidate_auc']:.3f}/{r['baseline_auc']:.3f}",
            flush=True,
        )
        if rows >= 1_000_000:
            if r["peak_rss_mb"] > RSS_TARGET_MB:
                failures.append(f"peak RSS {r['peak_rss_mb']:.0f} MB > {RSS_TARGET_MB} MB")
            if ratio > RATIO_TARGET:
                failures.append(f"total {r['total_s']:.1f} s > {RATIO_TARGET} x fit {r['fit_s']:.1f} s")
    print("targets at 1M rows: " + ("met" if not failures else "MISSED: " + "; ".join(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
