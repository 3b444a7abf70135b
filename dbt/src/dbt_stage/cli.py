"""`dbt-stage`: the dbt stage's command line, identical in every runner (local, docker, kubernetes).

    dbt-stage build --layer staging|intermediate|marts --ds D [--full-refresh]
    dbt-stage freshness --ds D
    dbt-stage parse
    dbt-stage docs --ds D

Exit codes: 0 ok; DATA_QUALITY (20) when a dbt test fails or a source is stale; TRANSFORM_ERROR (21)
when a model or test cannot compile or run; WAREHOUSE_UNAVAILABLE (50) when the warehouse cannot be
reached; BAD_ARGUMENT (15) for a bad date or a missing project.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from enum import StrEnum
from typing import Annotated

import typer

from dbt_stage.paths import project_dir, target_dir
from dbt_stage.runner import DbtOutcome, invoke, log
from mlp_common.cli import run_app
from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.logs import set_context
from mlp_common.results import write_result
from mlp_common.warehouse import DBT_BUILD_LOCK, RAW_LOAD_LOCK, connect, session_lock

STAGE = "dbt"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help=__doc__.split("\n\n")[0] if __doc__ else None)


class Layer(StrEnum):
    staging = "staging"
    intermediate = "intermediate"
    marts = "marts"
    all = "all"


# The models' as_of_date (macros/as_of_date.sql). An environment variable, not `--vars`: dbt parses
# the whole project again whenever --vars changes (~1.5 s in the first layer of every day), while the
# date in the environment is read only at execution and leaves the parse re-usable.
AS_OF_DATE_ENV = "PIPELINE_AS_OF_DATE"


def _set_logical_date(ds: str) -> str:
    """The validated date, also handed to the models (AS_OF_DATE_ENV) and to the log context."""
    try:
        as_of = date.fromisoformat(ds).isoformat()
    except ValueError:
        raise StageError(f"--ds must be a date YYYY-MM-DD, got {ds!r}", ExitCode.BAD_ARGUMENT) from None
    os.environ[AS_OF_DATE_ENV] = as_of
    set_context(ds=as_of)
    return as_of


def _check_warehouse() -> None:
    """Fail fast (and retryably) when the warehouse is down, before dbt spends seconds parsing."""
    with connect("dbt-stage") as conn:
        conn.execute("select 1")


@contextmanager
def _build_locks(*, reads_raw: bool) -> Iterator[None]:
    """Serialise dbt builds (the shared intermediate and mart tables; see mlp_common.warehouse), and
    keep loads out while a layer reads raw incrementally. Held on a session of their own, released
    when dbt is done or this process dies."""
    with connect("dbt-stage-lock", autocommit=True) as conn, ExitStack() as locks:
        waited = time.monotonic()
        locks.enter_context(session_lock(conn, *DBT_BUILD_LOCK))
        if reads_raw:
            locks.enter_context(session_lock(conn, *RAW_LOAD_LOCK))
        log.info("build locks held", extra={"fields": {"waited_seconds": round(time.monotonic() - waited, 3)}})
        yield


def _finish(outcome: DbtOutcome, **context: object) -> None:
    write_result({"stage": STAGE, **context, **outcome.as_result()})
    if outcome.exit_code != ExitCode.OK:
        detail = "; ".join(outcome.failures[:5]) or outcome.error or "dbt failed"
        more = f" (+{len(outcome.failures) - 5} more)" if len(outcome.failures) > 5 else ""
        raise StageError(f"dbt {outcome.command} failed: {detail}{more}", outcome.exit_code)


@app.command()
def build(
    layer: Annotated[Layer, typer.Option(help="Which folder of models to build and test (all = the whole project).")],
    ds: Annotated[str, typer.Option(help="Logical date YYYY-MM-DD; the models' as_of_date.")],
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Rebuild incremental marts from scratch.")] = False,
) -> None:
    """Build (run + test) one layer for the logical date: `PIPELINE_AS_OF_DATE=D dbt build --select <layer>`."""
    as_of = _set_logical_date(ds)
    project = project_dir()
    _check_warehouse()
    command = ["build"]
    if layer != Layer.all:
        command += ["--select", layer.value]
    if full_refresh:
        command.append("--full-refresh")
    with _build_locks(reads_raw=layer in (Layer.intermediate, Layer.all)):
        outcome = invoke(command, project=project)
    _finish(outcome, layer=layer.value, ds=as_of, full_refresh=full_refresh)


@app.command()
def freshness(ds: Annotated[str, typer.Option(help="Logical date YYYY-MM-DD (recorded; dbt compares load times with now).")]) -> None:
    """`dbt source freshness` on raw.*: a stale transactions load stops the run (exit 20).

    raw.customers may not exist yet (ingest creates it on its first customers load): it is then
    left out and reported as missing instead of failing the check."""
    as_of = _set_logical_date(ds)
    project = project_dir()
    _check_warehouse()
    with connect("dbt-stage") as conn:
        present = {row[0] for row in conn.execute("select table_name from information_schema.tables where table_schema = 'raw'")}
    if "transactions" not in present:
        raise StageError("raw.transactions does not exist: run `ingest load` first", ExitCode.DATA_QUALITY)
    selection = ["source:raw.transactions", *(["source:raw.customers"] if "customers" in present else [])]
    outcome = invoke(["source", "freshness", "--select", *selection], project=project)
    if "customers" not in present:
        outcome.sources["raw.customers"] = {"status": "missing"}
    _finish(outcome, ds=as_of)


@app.command()
def parse() -> None:
    """`dbt parse`: writes target/manifest.json (no warehouse query, no vars needed)."""
    project = project_dir()
    outcome = invoke(["parse"], project=project)
    manifest = target_dir(project) / "manifest.json"
    _finish(outcome, manifest=str(manifest) if manifest.is_file() else None)


@app.command()
def docs(ds: Annotated[str, typer.Option(help="Logical date YYYY-MM-DD (the docs compile the models for it).")]) -> None:
    """`dbt docs generate`: the catalog and the static docs site in the target folder."""
    as_of = _set_logical_date(ds)
    project = project_dir()
    _check_warehouse()
    outcome = invoke(["docs", "generate"], project=project)
    _finish(outcome, ds=as_of)


def main() -> None:
    run_app(app, STAGE)


if __name__ == "__main__":
    main()
