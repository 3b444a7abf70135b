"""Score one date's feature snapshot (or one shard of it) and write the predictions back.

Data path, in bounded memory whatever the number of customers:

    reader connection: COPY (select ... where as_of_date = D and <shard>) TO STDOUT (csv)
      -> pyarrow's streaming CSV reader, one record batch per `chunk_bytes` block
      -> ONNX Runtime -> churn probability, risk band, running score statistics
      -> writer connection: COPY into a fresh table created in the writer's transaction

then, still in that one transaction: build the fresh table's primary key in one sort, swap it in
for the shard's partition of D under the date's lock (`mlp_common.predictions.swap_in`), replace
the batch record, commit. A crash before the commit leaves nothing behind (the fresh table was
never committed); readers see the old shard or the new one.

Shards: PostgreSQL's hash partitioning of customer_id (`mlp_common.predictions.shard_predicate`),
the same function that routes rows into D's shard partitions.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import pq, sql
from psycopg.copy import QueuedLibpqWriter
from psycopg.types.json import Jsonb

from mlp_common import predictions, registry
from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.logs import get_logger
from mlp_common.warehouse import connect
from predictor.bands import BANDS, band_codes
from predictor.drift import ScoreStats
from predictor.features import FEATURES_SCHEMA, FEATURES_TABLE, Column, check_matches, feature_columns
from predictor.scoring import Scorer

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


class _CopyStream(io.RawIOBase):
    """A readable file over a started COPY TO STDOUT, for pyarrow's streaming CSV reader.

    The server sends COPY data one row per message. psycopg's `Copy.read()` returns them one at a
    time through a Python generator and a wait loop, ~1.3 us per row: 1.3 s of a 1 M-row snapshot.
    Here each row costs one libpq call (`PQgetCopyData`, blocking): the same rows in under half the
    time, gathered into blocks of about n bytes, so pyarrow makes one Python call per block.
    psycopg still starts the COPY (errors before the first row raise as usual); this class ends it
    by collecting the server's final result, as psycopg would.
    """

    def __init__(self, copy: psycopg.Copy) -> None:
        self._pgconn = copy.connection.pgconn
        self._leftover = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        block = bytearray(self._leftover)
        self._leftover = b""
        get_copy_data = self._pgconn.get_copy_data
        while not self._done and (size < 0 or len(block) < size):
            nbytes, data = get_copy_data(0)
            if nbytes < 0:
                self._finish()
                break
            block += data  # copied at once: libpq's per-row buffers are freed as we go
        if 0 <= size < len(block):
            self._leftover = bytes(block[size:])
            del block[size:]
        return bytes(block)

    def _finish(self) -> None:
        """The COPY's data has ended: collect its final result (an error raised mid-COPY arrives here)."""
        self._done = True
        while (result := self._pgconn.get_result()) is not None:
            if result.status != pq.ExecStatus.COMMAND_OK:
                message = (result.error_message or b"").decode(errors="replace").strip()
                raise psycopg.DatabaseError(f"reading the features failed: {message}")

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def peek_nonempty(self) -> bool:
        """True when the COPY carries at least one row (pyarrow refuses an empty CSV)."""
        if not self._leftover and not self._done:
            first = self.read(1)
            self._leftover = first + self._leftover
        return bool(self._leftover)


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
    kinds = {f["name"]: f["type"] for f in features}
    projections: list[sql.Composable] = [sql.SQL("customer_id::text")]
    for c in columns:
        cast = "float8" if kinds[c.name] == "numeric" else "text"
        projections.append(sql.SQL("{c}::{t} as {c}").format(c=sql.Identifier(c.name), t=sql.SQL(cast)))
    return sql.SQL("copy (select {cols} from {table} where as_of_date = {d} and {shard}) to stdout (format csv)").format(
        cols=sql.SQL(", ").join(projections),
        table=sql.Identifier(FEATURES_SCHEMA, FEATURES_TABLE),
        d=sql.Literal(ds),
        shard=predictions.shard_predicate(shard.count, shard.index),
    )


def _csv_reader(stream: _CopyStream, columns: list[Column], features: list[dict[str, str]], chunk_bytes: int) -> pa_csv.CSVStreamingReader:
    kinds = {f["name"]: f["type"] for f in features}
    names = ["customer_id", *(c.name for c in columns)]
    # categories as dictionaries: scoring then builds one Python string per distinct value, not one per row
    categorical = pa.dictionary(pa.int32(), pa.string())
    types = {"customer_id": pa.string(), **{c.name: pa.float32() if kinds[c.name] == "numeric" else categorical for c in columns}}
    return pa_csv.open_csv(
        stream,
        read_options=pa_csv.ReadOptions(column_names=names, block_size=chunk_bytes, use_threads=False),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        # PostgreSQL's CSV: NULL is an unquoted empty field, an empty string is a quoted one
        convert_options=pa_csv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    )


_BAND_DICTIONARY = pa.array(BANDS)
_STAGED_WRITE = pa_csv.WriteOptions(include_header=False)


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
            copy_into = sql.SQL("copy {} (customer_id, churn_probability, risk_band) from stdin (format csv)").format(
                sql.Identifier(predictions.SCHEMA, loaded)
            )
            writing = writer.cursor()
            # the queued writer sends on a worker thread: reading and scoring the next block overlap the server's COPY
            with (
                reader.cursor().copy(_select(ds, columns, model.features, shard)) as out,
                writing.copy(copy_into, writer=QueuedLibpqWriter(writing)) as into,
            ):
                stream = _CopyStream(out)
                if stream.peek_nonempty():  # an empty shard is not an error, but pyarrow refuses an empty CSV
                    for batch in _csv_reader(stream, columns, model.features, chunk_bytes):
                        t0 = time.monotonic()
                        probability = scorer.churn_probability(batch)
                        model_seconds += time.monotonic() - t0
                        codes = band_codes(probability)
                        stats.update(probability)
                        band_counts += np.bincount(codes, minlength=len(BANDS))
                        staged = pa.table(
                            {
                                "customer_id": batch.column("customer_id"),
                                "churn_probability": probability,
                                "risk_band": pa.DictionaryArray.from_arrays(pa.array(codes), _BAND_DICTIONARY),
                            }
                        )
                        sink = pa.BufferOutputStream()
                        pa_csv.write_csv(staged, sink, _STAGED_WRITE)
                        into.write(sink.getvalue())
                        chunks += 1
                        log.info("chunk staged", extra={"fields": {"chunk": chunks, "rows": batch.num_rows}})
                        if delay:
                            time.sleep(delay)
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
