"""Performance harness: the whole pipeline at several scales, and the comparisons that justify its design.

    uv run --project bench python bench/run.py [--scale 5k,50k] [--skip-cosmos]      (`make bench`)

Per scale (customers x two years, 2024-01-01 .. 2025-12-31, generated into `.data/bench/<scale>/`,
a fresh database `bench_<scale>` on the warehouse server), every stage runs as a subprocess in its own
environment with the command line and environment the local runner gives it (`dags/ml_pipeline_lib/
stages.py`), and is measured for wall time, rows/s and peak RSS (`os.wait4` of the process tree):

  history  generate the landing files; `ingest load --history` of every day before D; the dbt
           project built for D-1 (`--full-refresh`, the DAG's three layer tasks): the state a daily
           run starts from;
  daily    the DAG's stages for D = 2025-12-31, in order: freshness, ingest, dbt staging,
           intermediate and marts, retrain_due, train (no champion yet: it always trains), predict
           (one shard); their sum is the end-to-end daily time (the run record is left out).

Then, on the same data in the same run, the comparisons (printed as ratios):
  - ingest `--history` vs pandas `read_csv` + `DataFrame.to_sql` (the common way) vs plain `COPY`
    of the same files into an unlogged text table (the floor); the ingest and the COPY are timed
    INGEST_RUNS times (the history phase's ingest, then fresh scratch databases) and the median
    taken, `to_sql` (a minute long) once;
  - the daily incremental dbt build for D vs the `--full-refresh` build for D-1 that the history
    phase ran (three layer builds each; one day, 1/730 of the rows, less), as wall time and as dbt's
    own execution time;
  - predictor (process wall, and its in-process write) vs a plain `COPY` of the same prediction rows;
  - our three layer-level `dbt build` tasks vs astronomer-cosmos's one task per model, both as
    Airflow DAGs run by `dag.test()` for D, each in its own copy of the database as the daily dbt
    tasks find it (history built for D-1, D landed: `CREATE DATABASE ... TEMPLATE`, and dbt's parse
    of the project for that database, as the previous day's run leaves it), so both do the same
    daily work (`bench/dbt_dags.py`);
  - once per run: parsing `dags/ml_pipeline.py` (PIPELINE_RUNNER=kubernetes) vs a minimal DAG with one
    KubernetesPodOperator (`bench/dag_parse.py`, fresh interpreters, median).

Every figure carries the 1-minute load average when it started (the machine is shared). Prints one
table per scale, growth from one scale to the next, the ratios against the issue's targets; writes
everything to `.data/bench/bench.json`.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import shutil
import statistics
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from _common import (
    BENCH_DATA,
    REPO,
    Timed,
    admin_database,
    conninfo,
    create_database,
    drop_database,
    load_average,
    run_stage,
    run_timed,
    uv,
)
from mlp_common.embedded import ensure_warehouse

sys.path.insert(0, str(REPO / "dags"))
from ml_pipeline_lib import stages

# A ~3 s ingest moves by +-15 % from one run to the next on this shared 2-core machine; the
# comparison takes the median of this many runs (and of as many plain COPYs).
INGEST_RUNS = 3
SCALES = ("5k", "50k", "500k")  # the issue's; any "<N>k" works (e.g. 1k for a quick try)
START, D = date(2024, 1, 1), date(2025, 12, 31)
SEED = 7
# The DAG's parameter defaults (dags/ml_pipeline.py), for the placeholders of the stage command lines.
DAG_PARAMS = {"churn_horizon_days": "90", "auc_floor": "0.6", "tolerance": "0.0", "cadence_days": "7"}
DBT_LAYERS = (stages.DBT_STAGING, stages.DBT_INTERMEDIATE, stages.DBT_MARTS)
TARGETS = {"ingest_vs_to_sql": 20.0, "layers_vs_cosmos": 2.0, "incremental_vs_full": 0.25}


@dataclass
class Row:
    """One line of a scale's table."""

    name: str
    seconds: float
    rows: int | None
    peak_rss_mb: float | None
    load: float
    note: str = ""

    @property
    def rows_per_second(self) -> float | None:
        return self.rows / self.seconds if self.rows and self.seconds else None


def customers_of(label: str) -> int:
    try:
        return int(float(label.removesuffix("k")) * 1000) if label.endswith("k") else int(label)
    except ValueError:
        raise SystemExit(f"--scale: {label!r} is not a customer count like 5k or 50000") from None


def stage_env(base: Mapping[str, str], spec: stages.StageSpec) -> dict[str, str]:
    """What the local runner adds for a stage: its local variables and its Jinja env rendered with the DAG defaults."""
    env = {**base, **{k: v.format(repo=REPO) for k, v in spec.local_env.items()}}
    for key, value in spec.env.items():
        env[key] = value.replace("{{ params.churn_horizon_days }}", DAG_PARAMS["churn_horizon_days"])
    return env


def run_spec(spec: stages.StageSpec, env: Mapping[str, str], ds: date, *extra: str, **values: str) -> Timed:
    argv = spec.argv(ds=ds.isoformat(), **{**DAG_PARAMS, **values})
    return run_stage(spec.project, [*argv, *extra], stage_env(env, spec))


def query_one(env: Mapping[str, str], query: str, *params: Any) -> Any:
    with psycopg.connect(conninfo(env)) as conn:
        row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]


def history_view(landing: Path, history: Path, before: date) -> Path:
    """A landing folder of symlinks to every file dated before `before`: the backfill a daily run follows."""
    shutil.rmtree(history, ignore_errors=True)
    for path in sorted(landing.glob("*/*.csv")):
        if date.fromisoformat(path.stem) < before:
            link = history / path.parent.name / path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return history


# ---------------------------------------------------------------- the pipeline at one scale


def run_pipeline(label: str, customers: int, server: Mapping[str, str], cosmos: bool) -> tuple[list[Row], dict[str, Any], dict[str, str]]:
    root = BENCH_DATA / label
    shutil.rmtree(root, ignore_errors=True)
    landing = root / "landing"
    base = {
        **create_database(server, f"bench_{label}"),
        "DBT_TARGET_PATH": str(root / "dbt-target"),
        "DBT_LOG_PATH": str(root / "dbt-logs"),
        "DBT_LOG_FORMAT": "text",
        "PIPELINE_REPORTS_DIR": str(root / "reports"),
        "PIPELINE_LOG_LEVEL": "WARNING",
    }
    rows: list[Row] = []
    facts: dict[str, Any] = {"customers": customers}

    def record(name: str, timed: Timed, count: int | None, note: str = "") -> Timed:
        rows.append(Row(name, timed.seconds, count, timed.peak_rss_mb, timed.load, note))
        print(f"  [{label}] {name:<34} {timed.seconds:8.1f} s  (load {timed.load})", flush=True)
        return timed

    argv = ["ingest", "generate", "--out", str(landing), "--customers", str(customers), "--start", str(START), "--end", str(D)]
    gen = run_stage("ingest", [*argv, "--seed", str(SEED)], base)
    record("generate (history files)", gen, int(gen.result["transactions"]), "transactions written")
    history = history_view(landing, root / "history", D)
    loaded = run_stage("ingest", ["ingest", "load", "--history", "--source", str(history)], base)
    record("ingest --history (before D)", loaded, int(loaded.result["rows_loaded"]), "rows loaded")
    facts["history_rows"] = int(loaded.result["rows_loaded"])
    facts["ingest_history"] = loaded.result
    raw_rows = int(query_one(base, "select count(*) from raw.transactions"))
    # the history build for D-1 is a full refresh, run as the DAG's three layer tasks would run it
    refreshed = [run_spec(spec, base, D - timedelta(days=1), "--full-refresh") for spec in DBT_LAYERS]
    rows.append(
        Row(
            "dbt 3 layers --full-refresh (D-1)",
            sum(t.seconds for t in refreshed),
            raw_rows,
            max(t.peak_rss_mb for t in refreshed),
            refreshed[0].load,
            "raw transactions",
        )
    )
    print(f"  [{label}] {rows[-1].name:<34} {rows[-1].seconds:8.1f} s  (load {rows[-1].load})", flush=True)

    # ---- the daily run for D, stage by stage as the DAG runs it
    daily_env = {**base, "PIPELINE_LANDING_DIR": str(landing)}
    record("freshness", run_spec(stages.FRESHNESS, daily_env, D), None)
    ingest = record("ingest --ds D", run_spec(stages.INGEST, daily_env, D), None)
    day_rows = int(ingest.result["rows_loaded"])
    rows[-1].rows, rows[-1].note = day_rows, "rows loaded"
    facts["day_rows"] = day_rows
    # the state the dbt tasks of D start from (history built for D-1, D landed), for the cosmos comparison
    clones = {mode: clone_database(server, base["PGDATABASE"], f"bench_{label}_{mode}") for mode in ("layers", "cosmos") if cosmos}
    incremental: list[Timed] = []
    for spec in DBT_LAYERS:
        incremental.append(record(f"{spec.name} (D)", run_spec(spec, daily_env, D), day_rows, "new rows of D"))
    feature_rows = int(query_one(base, "select count(*) from marts.customer_churn_features where as_of_date = %s", D))
    rows[-1].rows, rows[-1].note = feature_rows, "feature rows of D"
    record("retrain_due", run_spec(stages.RETRAIN_DUE, daily_env, D), None)
    train = record("train", run_spec(stages.TRAIN, daily_env, D), None)
    rows[-1].rows = int(train.result.get("row_counts", {}).get("total", 0)) or None
    rows[-1].note = "training rows"
    predict = record("predict (1 shard)", run_spec(stages.PREDICT, daily_env, D, shard="0/1"), None)
    rows[-1].rows, rows[-1].note = int(predict.result["rows"]), "customers scored"
    daily = rows[-8:]  # freshness .. predict
    rows.append(
        Row(
            "daily run for D, end to end",
            sum(r.seconds for r in daily),
            day_rows,
            max(r.peak_rss_mb or 0 for r in daily),
            daily[0].load,
            "sum of the 8 stages",
        )
    )
    facts["train"] = {k: train.result.get(k) for k in ("row_counts", "timings", "promoted")}
    facts["predict"] = {k: predict.result.get(k) for k in ("rows", "timings", "peak_rss_mb")}
    # incremental for D vs the full refresh for D-1 (one day less: 1/730 of the rows), three layer builds each
    facts["dbt_incremental_vs_full"] = {
        "incremental_wall": sum(t.seconds for t in incremental),
        "full_wall": sum(t.seconds for t in refreshed),
        "incremental_dbt_exec": sum(float(t.result["execution_seconds"]) for t in incremental),
        "full_dbt_exec": sum(float(t.result["execution_seconds"]) for t in refreshed),
        "load": incremental[0].load,
        "full_load": refreshed[0].load,
    }
    facts["clones"] = clones
    facts["predict_vs_copy"] = predict_vs_copy(base, predict)
    facts["ingest_vs_baselines"] = ingest_vs_baselines(base, history, loaded)
    return rows, facts, base


# ---------------------------------------------------------------- the comparisons


def copy_seconds(conn: psycopg.Connection, table: str, columns: Iterable[str], chunks: Iterable[bytes]) -> float:
    """Seconds to COPY CSV chunks into a fresh unlogged text table (the floor), committed."""
    cols = list(columns)
    conn.execute(f"drop table if exists {table}")
    conn.execute(f"create unlogged table {table} ({', '.join(f'{c} text' for c in cols)})")
    conn.commit()
    started = time.perf_counter()
    with conn.cursor().copy(f"copy {table} from stdin (format csv)") as copy:
        for chunk in chunks:
            copy.write(chunk)
    conn.commit()
    seconds = time.perf_counter() - started
    conn.execute(f"drop table {table}")
    conn.commit()
    return seconds


def _file_bodies(paths: Iterable[Path]) -> Iterable[bytes]:
    for path in paths:
        with path.open("rb") as f:
            f.readline()  # header
            while chunk := f.read(1 << 20):
                yield chunk


def repeat_ingest(env: Mapping[str, str], history: Path, first: Timed) -> list[Timed]:
    """`first` (the history phase's `ingest load --history`) and INGEST_RUNS - 1 more of the same
    files, each into a fresh scratch database (dropped at the end)."""
    scratch = f"{env['PGDATABASE']}_ingest"
    runs = [first]
    for _ in range(INGEST_RUNS - 1):
        runs.append(run_stage("ingest", ["ingest", "load", "--history", "--source", str(history)], create_database(env, scratch)))
    drop_database(env, scratch)
    return runs


def ingest_vs_baselines(env: Mapping[str, str], history: Path, ingest: Timed) -> dict[str, Any]:
    """The history files again: the ingest and plain COPY into unlogged text tables (medians of
    INGEST_RUNS), then pandas read_csv + to_sql."""
    import pandas as pd
    import sqlalchemy

    runs = repeat_ingest(env, history, ingest)
    files = {p.name: sorted(p.glob("*.csv")) for p in sorted(history.iterdir()) if p.is_dir()}
    load = load_average()
    copies: list[float] = []
    with psycopg.connect(conninfo(env)) as conn:
        for _ in range(INGEST_RUNS):
            copy_s = 0.0
            for table, paths in files.items():
                header = paths[0].open().readline().strip().split(",")
                copy_s += copy_seconds(conn, f"bench_copy_{table}", header, _file_bodies(paths))
            copies.append(copy_s)
    url = sqlalchemy.engine.URL.create(
        "postgresql+psycopg",
        username=env.get("PGUSER"),
        password=env.get("PGPASSWORD"),
        host=env.get("PGHOST"),
        port=int(env["PGPORT"]) if env.get("PGPORT") else None,
        database=env.get("PGDATABASE"),
    )
    engine = sqlalchemy.create_engine(url)
    to_sql_load = load_average()
    started = time.perf_counter()
    for table, paths in files.items():
        frames: list[pd.DataFrame] = []
        pending = 0
        for i, path in enumerate(paths):
            frames.append(pd.read_csv(path, dtype=str, keep_default_na=False))
            pending += len(frames[-1])
            if pending >= 500_000 or i == len(paths) - 1:  # one to_sql per ~500k rows: no per-file overhead
                pd.concat(frames).to_sql(f"bench_to_sql_{table}", engine, if_exists="append", index=False)
                frames, pending = [], 0
    to_sql_s = time.perf_counter() - started
    with engine.begin() as conn:
        for table in files:
            conn.exec_driver_sql(f"drop table if exists bench_to_sql_{table}")
    engine.dispose()
    process_runs = [run.seconds for run in runs]
    load_runs = [float(run.result["load_seconds"]) for run in runs]
    return {
        "rows": int(ingest.result["rows_loaded"]),
        "ingest_process_seconds": statistics.median(process_runs),
        "ingest_load_seconds": statistics.median(load_runs),
        "plain_copy_seconds": statistics.median(copies),
        "ingest_process_runs": process_runs,
        "ingest_load_runs": load_runs,
        "plain_copy_runs": copies,
        "to_sql_seconds": to_sql_s,
        "load": load,
        "to_sql_load": to_sql_load,
    }


def predict_vs_copy(env: Mapping[str, str], predict: Timed) -> dict[str, Any]:
    """The rows the predictor wrote for D, read back as CSV and COPYed into an unlogged table (the floor)."""
    columns = ("as_of_date", "customer_id", "model_version", "churn_probability", "risk_band", "scored_at")
    buffer = io.BytesIO()
    with psycopg.connect(conninfo(env)) as conn:
        query = f"copy (select {', '.join(columns)} from ml.churn_predictions where as_of_date = '{D}') to stdout (format csv)"
        with conn.cursor().copy(query) as out:
            for block in out:
                buffer.write(block)
        load = load_average()
        floor = copy_seconds(conn, "bench_copy_predictions", columns, [buffer.getvalue()])
    timings = predict.result["timings"]
    return {
        "rows": int(predict.result["rows"]),
        "predict_process_seconds": predict.seconds,
        # read + score + stage, then the final transaction; the model's own time taken out
        "predict_write_seconds": float(timings["staged_seconds"]) - float(timings["model_seconds"]) + float(timings["commit_seconds"]),
        "plain_copy_seconds": floor,
        "load": load,
    }


def clone_database(server: Mapping[str, str], source: str, name: str) -> str:
    """A copy of `source` as it is now (CREATE DATABASE ... TEMPLATE, file copy): the same starting state twice."""
    drop_database(server, name)
    for attempt in range(30):
        try:
            with psycopg.connect(conninfo(server, admin_database(server)), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("create database {} template {} strategy file_copy").format(sql.Identifier(name), sql.Identifier(source))
                )
            return name
        except psycopg.errors.ObjectInUse:  # an autovacuum worker on the source: it finishes soon
            if attempt == 29:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def dbt_parse(env: Mapping[str, str], target: Path) -> Path:
    """`dbt-stage parse` for the database of `env` into `target` (manifest.json, partial_parse.msgpack)."""
    run_stage("dbt", ["dbt-stage", "parse"], {**stage_env(env, stages.DBT_STAGING), "DBT_TARGET_PATH": str(target)})
    return target / "manifest.json"


def manifest(base: Mapping[str, str]) -> Path:
    """Parsed once: the manifest cosmos renders its DAG from (no warehouse query)."""
    return dbt_parse(base, BENCH_DATA / "manifest")


def parse_folder(mode: str, env: Mapping[str, str]) -> Path:
    """Where a mode's dbt looks for a parse to re-use: ours in the stage's target folder, cosmos in the
    project's (it copies the newer of that and its own cache into each task's folder)."""
    return Path(env["DBT_TARGET_PATH"]) if mode == "layers" else REPO / "dbt" / "target"


def layers_vs_cosmos(base: Mapping[str, str], clones: Mapping[str, str], manifest_path: Path, test_behavior: str) -> dict[str, Any]:
    """Both DAGs under `dag.test()` for D, each in its own copy of the same state (history built for D-1,
    D landed): the daily dbt work, models and tests, done once per layer or once per model.

    Each also finds what the previous day's run leaves a daily run: dbt's parse of the project for
    that database (`dbt-stage parse` into the mode's parse folder). Without it the first task of
    either would parse the whole project again, only because the copy is another database (dbt
    re-parses when the connection changes), which a daily run on its own database never does."""
    out: dict[str, Any] = {}
    for mode, clone in clones.items():
        env = {**base, "PGDATABASE": clone}
        dbt_parse(env, parse_folder(mode, env))
        script = [uv(), "run", "--quiet", "--frozen", "--project", str(REPO / "bench"), "python", str(REPO / "bench" / "dbt_dags.py")]
        timed = run_timed(
            [*script, mode, "--ds", D.isoformat(), "--manifest", str(manifest_path)],
            {
                **stage_env(env, stages.DBT_STAGING),
                "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
                "DO_NOT_TRACK": "1",
                "BENCH_COSMOS_TEST_BEHAVIOR": test_behavior,
            },
        )
        out[mode] = {**timed.result, "process_seconds": timed.seconds, "peak_rss_mb": timed.peak_rss_mb, "load": timed.load}
        print(f"  {mode:<8} dag.test(): run {timed.result['run_seconds']:.1f} s, {timed.result['tasks']} tasks (load {timed.load})")
        drop_database(base, clone)
    return out


def dag_parse(repeats: int) -> dict[str, Any]:
    timed = run_stage("dags", ["python", str(REPO / "bench" / "dag_parse.py"), "--repeats", str(repeats)], {})
    return timed.result


# ---------------------------------------------------------------- printing


def fmt(value: float | None, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if value is not None else f"{'-':>{width}}"


def print_table(label: str, rows: list[Row]) -> None:
    print(f"\n== {label}: per stage (wall s, rows, rows/s, peak RSS MB, 1-min load average at start)")
    print(f"  {'stage':<36} {'wall s':>8} {'rows':>11} {'rows/s':>11} {'RSS MB':>7} {'load':>5}  rows are")
    for r in rows:
        print(
            f"  {r.name:<36} {r.seconds:8.1f} {fmt(r.rows, ',', 11)} {fmt(r.rows_per_second, ',.0f', 11)}"
            f" {fmt(r.peak_rss_mb, '.0f', 7)} {r.load:5.2f}  {r.note}"
        )


def print_growth(results: dict[str, dict[str, Any]]) -> None:
    labels = list(results)
    for small, large in itertools.pairwise(labels):
        a = {r["name"]: r for r in results[small]["rows"]}
        b = {r["name"]: r for r in results[large]["rows"]}
        print(f"\n== growth {small} -> {large}: time x (rows x); linear means the two agree")
        for name in a:
            if name in b and a[name]["seconds"]:
                t = b[name]["seconds"] / a[name]["seconds"]
                n = f"{b[name]['rows'] / a[name]['rows']:.1f}" if a[name]["rows"] and b[name]["rows"] else "-"
                print(f"  {name:<36} time x{t:5.1f}   rows x{n}")


def ratios(facts: dict[str, Any]) -> dict[str, float]:
    ing, inc, pred = facts["ingest_vs_baselines"], facts["dbt_incremental_vs_full"], facts["predict_vs_copy"]
    out = {
        "to_sql / ingest (process)": ing["to_sql_seconds"] / ing["ingest_process_seconds"],
        "to_sql / ingest (load)": ing["to_sql_seconds"] / ing["ingest_load_seconds"],
        "ingest (load) / plain COPY": ing["ingest_load_seconds"] / ing["plain_copy_seconds"],
        "ingest (process) / plain COPY": ing["ingest_process_seconds"] / ing["plain_copy_seconds"],
        "incremental / full refresh (dbt exec)": inc["incremental_dbt_exec"] / inc["full_dbt_exec"],
        "incremental / full refresh (wall)": inc["incremental_wall"] / inc["full_wall"],
        "predict (process) / plain COPY": pred["predict_process_seconds"] / pred["plain_copy_seconds"],
        "predict (write) / plain COPY": pred["predict_write_seconds"] / pred["plain_copy_seconds"],
    }
    if "cosmos" in facts:
        c = facts["cosmos"]
        out["cosmos / layers (dag run)"] = c["cosmos"]["run_seconds"] / c["layers"]["run_seconds"]
    return out


def print_ratios(label: str, facts: dict[str, Any]) -> None:
    r = ratios(facts)
    ing, inc, pred = facts["ingest_vs_baselines"], facts["dbt_incremental_vs_full"], facts["predict_vs_copy"]
    print(f"\n== {label}: side by side (same data, same run)")
    runs = ", ".join(f"{seconds:.2f}" for seconds in ing["ingest_process_runs"])
    print(
        f"  ingest of {ing['rows']:,} rows: ingest process {ing['ingest_process_seconds']:.2f} s (median of {runs};"
        f" load {ing['ingest_load_seconds']:.2f} s), plain COPY {ing['plain_copy_seconds']:.2f} s (median),"
        f" pandas to_sql {ing['to_sql_seconds']:.1f} s (load avg {ing['to_sql_load']})"
    )
    print(
        f"    to_sql / ingest            x{r['to_sql / ingest (process)']:6.1f} (process), x{r['to_sql / ingest (load)']:.1f} (load)"
        f"   target >= {TARGETS['ingest_vs_to_sql']:.0f}"
    )
    print(
        f"    ingest / plain COPY        x{r['ingest (process) / plain COPY']:6.2f} (process),"
        f" x{r['ingest (load) / plain COPY']:.2f} (load)"
    )
    print(
        "  dbt daily incremental for D (3 layers) vs --full-refresh for D-1 (3 layers):"
        f" wall {inc['incremental_wall']:.1f} / {inc['full_wall']:.1f} s,"
        f" dbt exec {inc['incremental_dbt_exec']:.1f} / {inc['full_dbt_exec']:.1f} s (load {inc['load']})"
    )
    print(
        f"    incremental / full         {r['incremental / full refresh (dbt exec)']:6.1%} (dbt exec)"
        f"   {r['incremental / full refresh (wall)']:.1%} (wall)   target <= {TARGETS['incremental_vs_full']:.0%} at 50k"
    )
    print(
        f"  predictor, {pred['rows']:,} rows: process {pred['predict_process_seconds']:.1f} s, write {pred['predict_write_seconds']:.2f} s,"
        f" plain COPY {pred['plain_copy_seconds']:.2f} s (load {pred['load']})"
    )
    print(
        f"    predict / plain COPY       x{r['predict (process) / plain COPY']:6.1f} (process),"
        f" x{r['predict (write) / plain COPY']:.1f} (write)"
    )
    if "cosmos" in facts:
        c = facts["cosmos"]
        print(
            "  daily dbt for D under dag.test(), each from a copy of the same state:"
            f" layers {c['layers']['run_seconds']:.1f} s ({c['layers']['tasks']} tasks),"
            f" cosmos ({c.get('test_behavior', 'build')}) {c['cosmos']['run_seconds']:.1f} s ({c['cosmos']['tasks']} tasks)"
            f" (load {c['layers']['load']}/{c['cosmos']['load']})"
        )
        print(f"    cosmos / layers            x{r['cosmos / layers (dag run)']:6.2f}   target >= {TARGETS['layers_vs_cosmos']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scale", default="5k,50k", help=f"comma-separated customer counts, e.g. {','.join(SCALES)}")
    parser.add_argument("--skip-cosmos", action="store_true", help="leave out the cosmos comparison")
    parser.add_argument(
        "--cosmos-test-behavior",
        choices=["build", "after_each"],
        default="build",
        help="cosmos TestBehavior: build = one task per model (default); after_each = cosmos's default, run and test tasks",
    )
    parser.add_argument("--parse-repeats", type=int, default=3, help="fresh interpreters per DAG file (median)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases (bench_<scale>)")
    args = parser.parse_args()
    labels = [s.strip() for s in args.scale.split(",") if s.strip()]
    started, load_start = time.perf_counter(), load_average()
    server = ensure_warehouse()
    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    manifest_path: Path | None = None
    for label in labels:
        customers = customers_of(label)
        print(f"== scale {label}: {customers:,} customers, {START} .. {D}", flush=True)
        rows, facts, env = run_pipeline(label, customers, server, cosmos=not args.skip_cosmos)
        clones = facts.pop("clones")
        if clones:
            manifest_path = manifest_path or manifest(env)
            facts["cosmos"] = layers_vs_cosmos(env, clones, manifest_path, args.cosmos_test_behavior)
            facts["cosmos"]["test_behavior"] = args.cosmos_test_behavior
        results[label] = {"rows": [{**asdict(r), "rows_per_second": r.rows_per_second} for r in rows], **facts}
        results[label]["ratios"] = ratios(facts)
        if not args.keep:
            drop_database(server, f"bench_{label}")
    parse = dag_parse(args.parse_repeats)
    print_growth(results)
    for label in labels:
        print_table(label, [Row(**{k: v for k, v in r.items() if k != "rows_per_second"}) for r in results[label]["rows"]])
    for label in labels:
        print_ratios(label, results[label])
    print(
        f"\n== DAG parse (median of {args.parse_repeats} fresh interpreters): ml_pipeline.py (kubernetes) {parse['ours_seconds']:.3f} s,"
        f" minimal one-KPO DAG {parse['minimal_seconds']:.3f} s, ratio x{parse['ratio']:.2f} (load {parse['load']})"
    )
    total = time.perf_counter() - started
    print(f"\n== total {total / 60:.1f} min; load average at start {load_start}, at end {load_average()}")
    out = BENCH_DATA / "bench.json"
    out.write_text(
        json.dumps({"scales": results, "dag_parse": parse, "total_seconds": total, "load_start": load_start}, indent=2, default=str)
    )
    print(f"   figures: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
