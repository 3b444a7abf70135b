"""Benchmark: the ingest stage against a plain COPY of the same 1 M-row file into an unlogged table.

Usage (from the repository root; `make bench-ingest` does this):
    uv run --project ingest python bench/ingest.py [--rows 1000000] [--repeat 3]

Prints the times (best of --repeat), their ratios and the ingest process's peak RSS. The stage
runs as a user runs it (`ingest load --ds D`, a process of its own); its load time, measured
inside it from connect to commit (parsing, COPY into the logged day partition with load metadata,
commit), spans what the floor's does: `COPY ... FROM STDIN (FORMAT csv)` of the same bytes into
an unlogged text table. The whole-process time (interpreter start-up and imports added) is
printed too.
Target (issue 2): ingest ≤ 2.0 × plain COPY, peak RSS ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# This file is named like the stage package it measures: keep its folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import psycopg  # noqa: E402

from mlp_common.embedded import ensure_warehouse  # noqa: E402

DAY = "2025-01-15"


def make_file(rows: int, folder: Path) -> Path:
    """A 1 M-row day file built from generated data (clean rows: the plain COPY must accept it)."""
    from ingest.generate import TRANSACTION_HEADER, generate

    days = 365
    customers = max(1000, int(rows / (0.09 * days * 0.8)))
    generated = folder / "generated"
    generate(generated, customers, date(2024, 1, 1), date(2024, 12, 31), seed=11, bad_row_rate=0.0)
    target = folder / "landing" / "transactions" / f"{DAY}.csv"
    target.parent.mkdir(parents=True)
    written = 0
    with target.open("wb") as out:
        out.write(TRANSACTION_HEADER)
        for path in sorted((generated / "transactions").glob("*.csv")):
            lines = path.read_bytes().splitlines(keepends=True)[1:]
            take = lines[: rows - written]
            out.writelines(take)
            written += len(take)
            if written >= rows:
                break
    if written < rows:
        raise SystemExit(f"generated only {written} rows; raise the customer count")
    return target


def run_ingest(landing: Path, env: dict[str, str], result: Path) -> tuple[float, int, dict[str, object]]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest.cli", "load", "--ds", DAY, "--source", str(landing)],
        env={**os.environ, **env, "PIPELINE_RESULT_PATH": str(result)},
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"ingest failed with status {status}")
    return seconds, usage.ru_maxrss * 1024, json.loads(result.read_text())


def clear_day(env: dict[str, str]) -> None:
    with psycopg.connect(**_conninfo(env)) as conn:
        if conn.execute("select to_regclass('raw.transactions')").fetchone()[0]:  # type: ignore[index]
            conn.execute("delete from raw.transactions where _partition_date = %s", (DAY,))
        conn.commit()


def plain_copy(path: Path, env: dict[str, str]) -> float:
    with psycopg.connect(**_conninfo(env)) as conn:
        conn.execute("drop table if exists bench_plain_copy")
        conn.execute(
            "create unlogged table bench_plain_copy (transaction_id text, customer_id text, amount text,"
            " transaction_date text, category text, merchant_id text)"
        )
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy("copy bench_plain_copy from stdin with (format csv, header true)") as copy,
            path.open("rb") as f,
        ):
            while chunk := f.read(1 << 20):
                copy.write(chunk)
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute("drop table bench_plain_copy")
        conn.commit()
    return seconds


def bench_database(env: dict[str, str]) -> dict[str, str]:
    """A database of its own, so that the benchmark never touches the demo's (or yours)."""
    with psycopg.connect(**_conninfo(env), autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = 'bench_ingest'").fetchone():
            conn.execute("create database bench_ingest")
    return {**env, "PGDATABASE": "bench_ingest"}


def _conninfo(env: dict[str, str]) -> dict[str, str]:
    names = {"PGHOST": "host", "PGPORT": "port", "PGDATABASE": "dbname", "PGUSER": "user", "PGPASSWORD": "password"}
    return {names[k]: v for k, v in env.items() if k in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    env = bench_database(ensure_warehouse())
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        path = make_file(args.rows, folder)
        size_mb = path.stat().st_size / 1e6
        ingest_runs, load_runs, copy_runs = [], [], []
        rss, result = 0, {}
        for i in range(args.repeat):
            clear_day(env)  # measure a first load of the day; a reload also deletes the old rows
            seconds, peak, result = run_ingest(folder / "landing", env, folder / f"result-{i}.json")
            ingest_runs.append(seconds)
            load_runs.append(float(result["load_seconds"]))
            rss = max(rss, peak)
            copy_runs.append(plain_copy(path, env))
        ingest_best, copy_best = min(ingest_runs), min(copy_runs)
        load_best = min(load_runs)
        figures = {
            "rows": args.rows,
            "file_mb": round(size_mb, 1),
            "ingest_process_seconds": round(ingest_best, 3),
            "ingest_load_seconds": round(load_best, 3),
            "plain_copy_seconds": round(copy_best, 3),
            "ratio_load": round(load_best / copy_best, 2),
            "ratio_process": round(ingest_best / copy_best, 2),
            "ingest_peak_rss_mb": round(rss / 2**20, 1),
            "rows_loaded": result.get("rows_loaded"),
        }
    print(f"ingest bench: {args.rows:,} rows, {figures['file_mb']} MB CSV, best of {args.repeat}")
    print(f"  plain COPY into unlogged table        {copy_best:>8.3f} s   ({args.rows / copy_best:,.0f} rows/s)")
    print(f"  ingest load (connect .. commit)       {load_best:>8.3f} s   ({args.rows / load_best:,.0f} rows/s)")
    print(f"  ingest load --ds (whole process)      {ingest_best:>8.3f} s   (adds interpreter start-up and imports)")
    print(f"  ratio load / plain COPY               {figures['ratio_load']:>8.2f}     (target <= 2.0)")
    print(f"  ratio whole process / plain COPY      {figures['ratio_process']:>8.2f}")
    print(f"  ingest peak RSS                       {figures['ingest_peak_rss_mb']:>8.1f} MB  (target <= 300)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
