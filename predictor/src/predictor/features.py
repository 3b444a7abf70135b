"""The features mart as the predictor sees it, and the check that it matches the model.

Discovery rule shared with the trainer (see the stage contracts): every column except the keys,
the label columns and names starting with `_`; numeric SQL types are numeric features, text and
boolean are categorical. The model's registry row lists what it was trained on; the predictor
refuses (SCHEMA_MISMATCH) to score a mart whose feature columns differ in name or type, before it
writes anything.
"""

from __future__ import annotations

import psycopg

from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.features import Column, table_columns
from mlp_common.features import feature_columns as contract_features

FEATURES_SCHEMA = "marts"
FEATURES_TABLE = "customer_churn_features"


def feature_columns(conn: psycopg.Connection, schema: str = FEATURES_SCHEMA, table: str = FEATURES_TABLE) -> list[Column] | None:
    """The mart's feature columns in table order, or None when the table does not exist."""
    columns = table_columns(conn, schema, table)
    return None if columns is None else contract_features(columns)


def check_matches(columns: list[Column], model_features: list[dict[str, str]], version: int) -> None:
    """Raise SCHEMA_MISMATCH unless the mart's features are exactly the model's (names and kinds)."""
    mart = {c.name: c for c in columns}
    model = {f["name"]: f["type"] for f in model_features}
    problems: list[str] = []
    missing = [n for n in model if n not in mart]
    extra = [n for n in mart if n not in model]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if extra:
        problems.append(f"column(s) the model was not trained on: {', '.join(extra)}")
    for name, kind in model.items():
        column = mart.get(name)
        if column is not None and column.kind != kind:
            got = column.kind or "unsupported"
            problems.append(f"{name} is {column.sql_type} ({got}) but the model expects {kind}")
    if problems:
        raise StageError(
            f"{FEATURES_SCHEMA}.{FEATURES_TABLE} does not match model version {version}: {'; '.join(problems)}",
            ExitCode.SCHEMA_MISMATCH,
        )
