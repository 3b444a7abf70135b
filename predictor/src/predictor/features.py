"""The features mart as the predictor sees it, and the check that it matches the model.

Discovery rule shared with the trainer (see the stage contracts): every column except the keys,
the label columns and names starting with `_`; numeric SQL types are numeric features, text and
boolean are categorical. The model's registry row lists what it was trained on; the predictor
refuses (SCHEMA_MISMATCH) to score a mart whose feature columns differ in name or type, before it
writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from mlp_common.exit_codes import ExitCode, StageError

FEATURES_SCHEMA = "marts"
FEATURES_TABLE = "customer_churn_features"
NON_FEATURE_COLUMNS = frozenset({"as_of_date", "cutoff_date", "customer_id", "label_window_end", "churned"})


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    kind: str | None  # "numeric", "categorical", or None for a type no feature may have


def _kind(category: str) -> str | None:
    # pg_type.typcategory: N numeric, S string, B boolean
    return {"N": "numeric", "S": "categorical", "B": "categorical"}.get(category)


def feature_columns(conn: psycopg.Connection, schema: str = FEATURES_SCHEMA, table: str = FEATURES_TABLE) -> list[Column] | None:
    """The mart's feature columns in table order, or None when the table does not exist."""
    oid = conn.execute("select to_regclass(format('%%I.%%I', %s::text, %s::text))::oid", (schema, table)).fetchone()
    if oid is None or oid[0] is None:
        return None
    rows = conn.execute(
        """
        select a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory
        from pg_attribute as a
        inner join pg_type as t on t.oid = a.atttypid
        where a.attrelid = %s and a.attnum > 0 and not a.attisdropped
        order by a.attnum
        """,
        (oid[0],),
    ).fetchall()
    return [
        Column(name, sql_type, _kind(category))
        for name, sql_type, category in rows
        if name not in NON_FEATURE_COLUMNS and not name.startswith("_")
    ]


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
