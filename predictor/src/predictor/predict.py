"""Score one date's feature snapshot (or one shard of it) and write the predictions back.

Data path, in bounded memory whatever the number of customers:

    reader connection: COPY (select ... where as_of_date = D and <shard>) TO STDOUT (binary)
      -> blocks of about `chunk_bytes`, read a block ahead on a worker thread, decoded column by
         column with numpy (`predictor.pgcopy`)
      -> ONNX Runtime -> churn probability, risk band, running score statistics
      -> rows encoded the same way -> writer connection: binary COPY into a fresh table created in
         the writer's transaction

then, still in that one transaction: build the fresh table's primary key in one sort, swap it in
for the shard's partition of D under the date's lock (`mlp_common.predictions.swap_in`), replace
the batch record, commit. A crash before the commit leaves nothing behind (the fresh table was
never committed); readers see the old shard or the new one.

Shards: PostgreSQL's hash partitioning of customer_id (`mlp_common.predictions.shard_predicate`),
the same function that routes rows into D's shard partitions.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from psycopg.types.json import Jsonb

from mlp_common import predictions, registry
from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.logs import get_logger
from mlp_common.warehouse import connect
from predictor import pgcopy
from predictor.bands import BANDS, band_codes
from predictor.drift import ScoreStats
from predictor.features import FEATURES_SCHEMA, FEATURES_TABLE, Column, check_matches, feature_columns
from predictor.scoring import MISSING, Scorer

log = get_logger("predictor")

DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024
DEFAULT_DRIFT_THRESHOLD = 0.2
# Fault injection for the crash test: sleep this long after each staged chunk (never set in production).
CHUNK_DELAY_ENV = "PREDICTOR_CHUNK_DELAY_SECONDS"


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based); 0/1 is the whole snapshot."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise StageError(f"shard {self.index}/{self.count} is invalid: need 0 <= I < N and N >= 1", ExitCode.BAD_ARGUMENT)

    @classmethod
    def parse(cls, text: str) -> Shard:
        parts = text.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise StageError(f"--shard must look like I/N (e.g. 0/4), got {text!r}", ExitCode.BAD_ARGUMENT)
        return cls(int(parts[0]), int(parts[1]))


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (Linux VmHWM: per address space, so exec resets it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _load_model(conn: psycopg.Connection, model_version: int | None) -> registry.ModelVersion:
    has_registry = conn.execute(
        "select to_regclass('ml.model_champion') is not null and to_regclass('ml.model_versions') is not null"
    ).fetchone()
    if model_version is not None:
        if not (has_registry and has_registry[0]):
            raise StageError(
                f"model version {model_version} is not in the registry (the registry is empty)", ExitCode.UNKNOWN_MODEL_VERSION
            )
        return registry.get_version(conn, model_version)
    current = registry.champion(conn) if has_registry and has_registry[0] else None
    if current is None:
        raise StageError("no champion model: train and promote one first, or pin --model-version", ExitCode.NO_CHAMPION)
    return current


def _select(ds: date, columns: list[Column], features: list[dict[str, str]], shard: Shard) -> sql.Composed:
    """The COPY of the shard's rows: customer_id, then each feature as float8 or text (the model's kinds)."""
    kinds = {f["name"]: f["type"] for f in features}
    projections: list[sql.Composable] = [sql.SQL("customer_id::text")]
    for c in columns:
        cast = "float8" if kinds[c.name] == "numeric" else "text"
        projections.append(sql.SQL("{c}::{t} as {c}").format(c=sql.Identifier(c.name), t=sql.SQL(cast)))
    return sql.SQL("copy (select {cols} from {table} where as_of_date = {d} and {shard}) to stdout (format binary)").format(
        cols=sql.SQL(", ").join(projections),
        table=sql.Identifier(FEATURES_SCHEMA, FEATURES_TABLE),
        d=sql.Literal(ds),
        shard=predictions.shard_predicate(shard.count, shard.index),
    )


def decode_features(
    block: pgcopy.RowBlock, columns: list[Column], features: list[dict[str, str]]
) -> tuple[pgcopy.Fields, dict[str, np.ndarray]]:
    """A block of `_select`'s rows: its fields (customer_id is field 0) and the model's input columns."""
    kinds = {f["name"]: f["type"] for f in features}
    fields = pgcopy.split_fields(block, 1 + len(columns))
    return fields, {
        c.name: pgcopy.float8_column(fields, k) if kinds[c.name] == "numeric" else pgcopy.text_categories(fields.column(k), MISSING)
        for k, c in enumerate(columns, start=1)
    }


def predict(
    ds: date,
    shard: Shard,
    model_version: int | None = None,
    drift_threshold: float = DEFAULT_DRIFT_THRESHOLD,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> dict[str, Any]:
    """Score and write one shard-run; return the stage result (see docs/predictor.md)."""
    started = time.monotonic()
    delay = float(os.environ.get(CHUNK_DELAY_ENV, "0") or 0)
    with connect("predictor-reader") as reader, connect("predictor-writer") as writer:
        # one snapshot for the registry lookup, the schema check and the scan
        reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        reader.read_only = True
        model = _load_model(reader, model_version)
        scorer = Scorer(registry.load_artifact(reader, model), model.features, model.version)
        columns = feature_columns(reader)
        if columns is None:
            raise StageError(f"{FEATURES_SCHEMA}.{FEATURES_TABLE} does not exist: build the marts for {ds} first", ExitCode.EMPTY_SNAPSHOT)
        check_matches(columns, model.features, model.version)
        found = reader.execute(
            sql.SQL("select exists (select 1 from {} where as_of_date = %s)").format(sql.Identifier(FEATURES_SCHEMA, FEATURES_TABLE)), (ds,)
        ).fetchone()
        if not (found and found[0]):
            raise StageError(
                f"{FEATURES_SCHEMA}.{FEATURES_TABLE} has no rows for as_of_date {ds}: nothing to score", ExitCode.EMPTY_SNAPSHOT
            )
        log.info(
            "scoring", extra={"fields": {"model_version": model.version, "shard": f"{shard.index}/{shard.count}", "features": len(columns)}}
        )

        predictions.ensure_schema(writer)
        stats = ScoreStats(model.score_reference)
        if not stats.has_reference:
            log.warning("model version %s has no usable score_reference: PSI not computed", model.version)
        band_counts = np.zeros(len(BANDS), dtype=np.int64)
        model_seconds = 0.0
        chunks = 0
        batch_id = uuid.uuid4()
        loaded = f"churn_predictions_load_{batch_id.hex}"
        with writer.transaction():
            # a fresh table, created in this transaction: invisible until the swap, gone if we crash, and under
            # wal_level=minimal its COPY skips the write-ahead log
            predictions.create_shard_table(writer, loaded, ds, model.version)
            copy_into = sql.SQL("copy {} (customer_id, churn_probability, risk_band) from stdin (format binary)").format(
                sql.Identifier(predictions.SCHEMA, loaded)
            )
            writing = writer.cursor()
            # the queued writer sends on a worker thread: reading and scoring the next block overlap the server's COPY
            with (
                reader.cursor().copy(_select(ds, columns, model.features, shard)) as out,
                writing.copy(copy_into, writer=QueuedLibpqWriter(writing)) as into,
            ):
                into.write(pgcopy.HEADER)
                for block in pgcopy.read_ahead(pgcopy.read_blocks(out, chunk_bytes)):
                    fields, features = decode_features(block, columns, model.features)
                    t0 = time.monotonic()
                    probability = scorer.churn_probability(features)
                    model_seconds += time.monotonic() - t0
                    codes = band_codes(probability)
                    stats.update(probability)
                    band_counts += np.bincount(codes, minlength=len(BANDS))
                    # customer_id goes back byte for byte; the probability is the model's float32, exactly, as float8
                    into.write(pgcopy.encode_rows([fields.column(0), probability.astype(">f8"), pgcopy.text_column(BANDS, codes)]).data)
                    chunks += 1
                    log.info("chunk staged", extra={"fields": {"chunk": chunks, "rows": len(block)}})
                    if delay:
                        time.sleep(delay)
                into.write(pgcopy.TRAILER)
            inserted = max(writing.rowcount, 0)
            predictions.finish_shard_table(writer, loaded)
            staged_seconds = time.monotonic() - started

            # the only statements that touch what readers see: a catalog swap under the date's lock
            deleted = predictions.swap_in(writer, loaded, ds, shard.count, shard.index)
            quantiles = stats.quantiles()
            raw_psi = stats.psi()
            psi = None if raw_psi is None else round(raw_psi, 6)
            drift = psi is not None and psi > drift_threshold
            # a run replaces its own batch record, and those of runs for D with another shard count (its rows superseded theirs)
            writer.execute(
                "delete from ml.prediction_batches where as_of_date = %s and (shard_count <> %s or shard = %s)",
                (ds, shard.count, shard.index),
            )
            writer.execute(
                """
                insert into ml.prediction_batches (batch_id, as_of_date, model_version, shard, shard_count, rows, quantiles, psi, drift)
                values (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                """,
                (batch_id, ds, model.version, shard.index, shard.count, inserted, Jsonb(quantiles), psi, drift),
            )
        if inserted != stats.count:
            raise StageError(f"staged {stats.count} rows but inserted {inserted}", ExitCode.UNEXPECTED)
    total = time.monotonic() - started
    result = {
        "as_of_date": ds.isoformat(),
        "batch_id": str(batch_id),
        "model_version": model.version,
        "shard": shard.index,
        "shard_count": shard.count,
        "rows": inserted,
        "replaced_rows": deleted,
        "risk_bands": {band: int(n) for band, n in zip(BANDS, band_counts, strict=True)},
        "quantiles": quantiles,
        "psi": psi,
        "drift": drift,
        "drift_threshold": drift_threshold,
        "timings": {
            "model_seconds": round(model_seconds, 3),
            "staged_seconds": round(staged_seconds, 3),
            "commit_seconds": round(total - staged_seconds, 3),
            "total_seconds": round(total, 3),
        },
        "peak_rss_mb": peak_rss_mb(),
    }
    if drift:
        log.warning("score drift: PSI %.3f > %.3f", psi, drift_threshold)
    return result
