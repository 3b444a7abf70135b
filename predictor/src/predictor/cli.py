"""`predictor predict --ds D [--shard I/N] [--model-version V]`: the command line the DAG runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from mlp_common.cli import run_app
from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.logs import set_context
from mlp_common.results import write_result
from predictor.predict import DEFAULT_CHUNK_BYTES, DEFAULT_DRIFT_THRESHOLD, Shard, predict

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Batch churn scoring written back to the warehouse.")


@app.callback()
def _root() -> None:
    """Batch churn scoring written back to the warehouse."""


@app.command("predict")
def predict_command(
    ds: Annotated[datetime, typer.Option("--ds", formats=["%Y-%m-%d"], help="Logical date D: score the features snapshot as_of_date = D.")],
    shard: Annotated[str, typer.Option("--shard", help="Score only shard I of N (stable hash of customer_id), e.g. 2/4.")] = "0/1",
    model_version: Annotated[
        int | None, typer.Option("--model-version", min=1, help="Pin a registry version instead of the champion.")
    ] = None,
    drift_threshold: Annotated[
        float, typer.Option("--drift-threshold", min=0.0, help="PSI above which the batch is flagged as drifted.")
    ] = (DEFAULT_DRIFT_THRESHOLD),
    chunk_bytes: Annotated[
        int, typer.Option("--chunk-bytes", min=1024, help="CSV bytes per scored chunk (bounds memory).")
    ] = DEFAULT_CHUNK_BYTES,
) -> None:
    """Score D's customers (or one shard) with the champion and replace their predictions for D."""
    day = ds.date()
    set_context(ds=day.isoformat())
    parsed = Shard.parse(shard)
    if drift_threshold != drift_threshold:  # NaN
        raise StageError("--drift-threshold must be a number", ExitCode.BAD_ARGUMENT)
    write_result(predict(day, parsed, model_version, drift_threshold, chunk_bytes))


def main() -> None:
    run_app(app, "predictor")


if __name__ == "__main__":
    main()
