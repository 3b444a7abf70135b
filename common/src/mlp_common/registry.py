"""The model registry in `ml.*`: versions, their artifacts, and the champion pointer.

Shared by the trainer (writes versions, promotes) and the predictor (reads the champion).
- A version and its artifact are inserted in one transaction: nobody sees a half-written model.
- The artifact is stored with its sha256 and verified on every load; the format is named
  (`onnx`), and nothing stored here is ever unpickled.
- `ml.model_champion` holds one row per model name. Promotion updates that row in place inside a
  transaction, after checking it still points at the version the candidate was compared with:
  at no moment is there no champion or two, and concurrent promotions cannot both win.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.warehouse import lock_for_transaction

DEFAULT_MODEL = "churn"

SCHEMA_DDL = """
create schema if not exists ml;

create table if not exists ml.model_versions (
    model_name text not null,
    version bigint generated always as identity,
    trained_at timestamptz not null default now(),
    as_of_date date not null,
    data_window jsonb not null,
    row_counts jsonb not null,
    class_balance jsonb not null,
    features jsonb not null,
    metrics jsonb not null,
    score_reference jsonb not null,
    dbt_invocation_id text,
    code_version text not null,
    artifact_format text not null,
    artifact bytea not null,
    artifact_sha256 text not null,
    report_path text,
    primary key (model_name, version)
);

create table if not exists ml.model_champion (
    model_name text primary key,
    version bigint not null,
    promoted_at timestamptz not null default now(),
    foreign key (model_name, version) references ml.model_versions (model_name, version)
);

create table if not exists ml.model_promotions (
    model_name text not null,
    version bigint not null,
    previous_version bigint,
    decided_at timestamptz not null default now(),
    promoted boolean not null,
    reason text not null
);
"""

_METADATA_COLUMNS = (
    "model_name, version, trained_at, as_of_date, data_window, row_counts, class_balance, features, metrics,"
    " score_reference, dbt_invocation_id, code_version, artifact_format, artifact_sha256, report_path"
)


@dataclass(frozen=True)
class NewVersion:
    """Everything the trainer records about a candidate (see ARCHITECTURE.md, model lifecycle)."""

    as_of_date: date
    data_window: dict[str, Any]
    row_counts: dict[str, Any]
    class_balance: dict[str, Any]
    features: list[dict[str, str]]  # [{"name": ..., "type": "numeric" | "categorical"}], in model input order
    metrics: dict[str, Any]
    score_reference: dict[str, Any]  # training score distribution, for the predictor's PSI
    code_version: str
    artifact: bytes
    artifact_format: str = "onnx"
    dbt_invocation_id: str | None = None
    report_path: str | None = None
    model_name: str = DEFAULT_MODEL


@dataclass(frozen=True)
class ModelVersion:
    """A registered version's metadata (the artifact is fetched separately, verified)."""

    model_name: str
    version: int
    trained_at: datetime
    as_of_date: date
    data_window: dict[str, Any]
    row_counts: dict[str, Any]
    class_balance: dict[str, Any]
    features: list[dict[str, str]]
    metrics: dict[str, Any]
    score_reference: dict[str, Any]
    dbt_invocation_id: str | None
    code_version: str
    artifact_format: str
    artifact_sha256: str
    report_path: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.features]


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the registry tables if missing (idempotent; safe under concurrent callers)."""
    with conn.transaction():
        lock_for_transaction(conn, "ml.registry", "ddl")
        conn.execute(SCHEMA_DDL)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def register(conn: psycopg.Connection, new: NewVersion) -> int:
    """Insert a version with its artifact in one transaction; return its version number."""
    with conn.transaction():
        row = conn.execute(
            """
            insert into ml.model_versions (
                model_name, as_of_date, data_window, row_counts, class_balance, features, metrics,
                score_reference, dbt_invocation_id, code_version, artifact_format, artifact, artifact_sha256, report_path
            ) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            returning version
            """,
            (
                new.model_name,
                new.as_of_date,
                Jsonb(new.data_window),
                Jsonb(new.row_counts),
                Jsonb(new.class_balance),
                Jsonb(new.features),
                Jsonb(new.metrics),
                Jsonb(new.score_reference),
                new.dbt_invocation_id,
                new.code_version,
                new.artifact_format,
                new.artifact,
                sha256(new.artifact),
                new.report_path,
            ),
        ).fetchone()
    assert row is not None
    return int(row[0])


def set_report_path(conn: psycopg.Connection, version: int, report_path: str, model_name: str = DEFAULT_MODEL) -> None:
    with conn.transaction():
        conn.execute(
            "update ml.model_versions set report_path = %s where model_name = %s and version = %s",
            (report_path, model_name, version),
        )


def _to_version(row: dict[str, Any]) -> ModelVersion:
    return ModelVersion(**row)


def get_version(conn: psycopg.Connection, version: int, model_name: str = DEFAULT_MODEL) -> ModelVersion:
    """A version's metadata, or StageError(UNKNOWN_MODEL_VERSION)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"select {_METADATA_COLUMNS} from ml.model_versions where model_name = %s and version = %s",  # noqa: S608 - constant column list
            (model_name, version),
        ).fetchone()
    if row is None:
        raise StageError(f"model version {version} of '{model_name}' is not in the registry", ExitCode.UNKNOWN_MODEL_VERSION)
    return _to_version(row)


def champion(conn: psycopg.Connection, model_name: str = DEFAULT_MODEL) -> ModelVersion | None:
    """The current champion's metadata, or None when no version was ever promoted."""
    columns = ", ".join("v." + c.strip() for c in _METADATA_COLUMNS.split(","))
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"""
            select {columns}
            from ml.model_champion as c
            inner join ml.model_versions as v using (model_name, version)
            where c.model_name = %s
            """,  # noqa: S608 - constant column list
            (model_name,),
        ).fetchone()
    return None if row is None else _to_version(row)


def load_artifact(conn: psycopg.Connection, version: ModelVersion) -> bytes:
    """The artifact bytes, refused (ARTIFACT_INTEGRITY) unless their sha256 matches the registry."""
    row = conn.execute(
        "select artifact, artifact_sha256 from ml.model_versions where model_name = %s and version = %s",
        (version.model_name, version.version),
    ).fetchone()
    if row is None:
        raise StageError(f"model version {version.version} disappeared from the registry", ExitCode.UNKNOWN_MODEL_VERSION)
    artifact, expected = bytes(row[0]), row[1]
    actual = sha256(artifact)
    if actual != expected or expected != version.artifact_sha256:
        raise StageError(
            f"artifact of model version {version.version} fails its integrity check"
            f" (sha256 {actual[:12]}… != {expected[:12]}…); refusing to load it",
            ExitCode.ARTIFACT_INTEGRITY,
        )
    return artifact


def _check_artifact(conn: psycopg.Connection, model_name: str, version: int) -> None:
    """Refuse (ARTIFACT_INTEGRITY) to promote a version whose stored artifact fails its sha256: the
    champion never points at a model the predictor would refuse, the previous one keeps serving."""
    row = conn.execute(
        "select artifact, artifact_sha256 from ml.model_versions where model_name = %s and version = %s for share", (model_name, version)
    ).fetchone()
    if row is None:
        raise StageError(f"model version {version} of '{model_name}' is not in the registry", ExitCode.UNKNOWN_MODEL_VERSION)
    actual = sha256(bytes(row[0]))
    if actual != row[1]:
        raise StageError(
            f"artifact of model version {version} fails its integrity check (sha256 {actual[:12]}… != {row[1][:12]}…);"
            " refusing to promote it, the champion is unchanged",
            ExitCode.ARTIFACT_INTEGRITY,
        )


def promote(
    conn: psycopg.Connection,
    version: int,
    *,
    compared_with: int | None,
    reason: str,
    model_name: str = DEFAULT_MODEL,
) -> bool:
    """Make `version` the champion if the champion is still `compared_with` (None: no champion yet).

    One transaction: the champion row is locked, checked and updated in place, so readers see the
    old champion or the new one, never none or two. Returns False when another promotion won the
    race (the caller's comparison is stale); the decision is recorded either way.
    """
    with conn.transaction():
        _check_artifact(conn, model_name, version)
        current = conn.execute("select version from ml.model_champion where model_name = %s for update", (model_name,)).fetchone()
        current_version = None if current is None else int(current[0])
        if current_version == version:
            won = True  # another run of the same date promoted this very version first: nothing to change
            reason = f"version {version} is already the champion"
        elif current_version != compared_with:
            won = False
            reason = f"champion changed to {current_version} while comparing with {compared_with}"
        elif current is None:
            inserted = conn.execute(
                "insert into ml.model_champion (model_name, version) values (%s, %s) on conflict (model_name) do nothing",
                (model_name, version),
            )
            won = inserted.rowcount == 1
            if not won:
                reason = "another version became the first champion concurrently"
        else:
            conn.execute(
                "update ml.model_champion set version = %s, promoted_at = now() where model_name = %s",
                (version, model_name),
            )
            won = True
        conn.execute(
            "insert into ml.model_promotions (model_name, version, previous_version, promoted, reason) values (%s, %s, %s, %s, %s)",
            (model_name, version, current_version, won, reason),
        )
    return won


def record_rejection(conn: psycopg.Connection, version: int, reason: str, model_name: str = DEFAULT_MODEL) -> None:
    """Record a gate decision that kept the current champion."""
    with conn.transaction():
        current = conn.execute("select version from ml.model_champion where model_name = %s", (model_name,)).fetchone()
        conn.execute(
            "insert into ml.model_promotions (model_name, version, previous_version, promoted, reason) values (%s, %s, %s, false, %s)",
            (model_name, version, None if current is None else int(current[0]), reason),
        )
