"""`ingest`: land raw files in the warehouse (`load`), make synthetic ones (`generate`), show what landed (`summary`)."""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer

from mlp_common.cli import run_app
from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.logs import get_logger, set_context
from mlp_common.results import write_result
from mlp_common.warehouse import connect

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, help=__doc__)
log = get_logger("ingest")


def parse_day(value: str, option: str = "--ds") -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError as exc:
        raise StageError(f"{option} must be a date as YYYY-MM-DD, got {value!r}", ExitCode.BAD_ARGUMENT) from exc


@app.command()
def load(
    ds: Annotated[str | None, typer.Option(help="Logical date YYYY-MM-DD: load that day's partition files.")] = None,
    source: Annotated[
        Path,
        typer.Option(envvar="PIPELINE_LANDING_DIR", help="Landing folder (<table>/<YYYY-MM-DD>.csv|.parquet), or one file with --table."),
    ] = Path("/data/landing"),
    history: Annotated[
        bool, typer.Option("--history", help="Load every file under the source; rows go to the partition of their own date.")
    ] = False,
    table: Annotated[str | None, typer.Option(help="History load of one table from a file or folder.")] = None,
) -> None:
    """Load raw files into raw.* with COPY; every input line lands in raw.<table> or raw.<table>_rejected."""
    from ingest.load import daily_files, history_files
    from ingest.load import load as load_files

    if history == (ds is not None):
        raise StageError("give either --ds YYYY-MM-DD (one day) or --history (a backfill), not both or neither", ExitCode.BAD_ARGUMENT)
    if table is not None and not history:
        raise StageError("--table goes with --history", ExitCode.BAD_ARGUMENT)
    day = parse_day(ds) if ds is not None else None
    set_context(ds=ds)
    started = time.perf_counter()
    files = {name: [path] for name, path in daily_files(source, day).items()} if day else history_files(source, table)
    load_started = time.perf_counter()
    with connect("ingest") as conn:
        results = load_files(conn, files, ds=day)
    load_seconds = time.perf_counter() - load_started
    tables = {name: stats.as_dict() for name, stats in results.items()}
    write_result(
        {
            "ds": ds,
            "mode": "history" if history else "daily",
            "rows_read": sum(s.rows_read for s in results.values()),
            "rows_loaded": sum(s.rows_loaded for s in results.values()),
            "rows_rejected": sum(s.rows_rejected for s in results.values()),
            "bytes": sum(s.bytes_read for s in results.values()),
            "seconds": round(time.perf_counter() - started, 3),
            "load_seconds": round(load_seconds, 3),
            "tables": tables,
        }
    )


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Landing folder to write (<table>/<YYYY-MM-DD>.csv).")],
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 5000,
    start: Annotated[str, typer.Option(help="First day YYYY-MM-DD.")] = "2024-01-01",
    end: Annotated[str, typer.Option(help="Last day YYYY-MM-DD.")] = "2025-12-31",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same files.")] = 7,
    bad_row_rate: Annotated[float, typer.Option(min=0.0, max=0.99, help="Share of rows given a realistic defect.")] = 0.0,
) -> None:
    """Write deterministic synthetic landing data with a real churn process (and planted defects)."""
    try:
        from ingest.generate import generate as generate_files
    except ModuleNotFoundError as exc:  # the stage image leaves the generator's numpy out
        raise StageError(
            f"the generator needs {exc.name}, which this installation leaves out (the stage image does):"
            " run it from the repository with `uv run --project ingest ingest generate`",
            ExitCode.USAGE,
        ) from exc

    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    if last < first:
        raise StageError(f"--end {end} is before --start {start}", ExitCode.BAD_ARGUMENT)
    started = time.perf_counter()
    summary = generate_files(out, customers, first, last, seed=seed, bad_row_rate=bad_row_rate)
    write_result({**summary.as_dict(), "out": str(out), "seconds": round(time.perf_counter() - started, 3)})


@app.command()
def summary() -> None:
    """Print rows per raw table and rejected lines by reason."""
    from ingest.report import raw_summary

    with connect("ingest") as conn:
        text, figures = raw_summary(conn)
    print(text)
    write_result(figures)


def main() -> None:
    run_app(app, "ingest")


if __name__ == "__main__":
    main()
