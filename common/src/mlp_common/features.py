"""The feature-column contract shared by the trainer and the predictor, written once.

A mart's feature columns are every column except the keys, the label columns and `_`-prefixed
metadata; numeric SQL types are numeric features, text and boolean are categorical, anything else
is a type no feature may have. The trainer discovers its features with this rule on the training
set; the predictor checks the features mart against the model with the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

NUMERIC = "numeric"
CATEGORICAL = "categorical"
NON_FEATURE_COLUMNS = frozenset({"as_of_date", "cutoff_date", "customer_id", "label_window_end", "churned"})


@dataclass(frozen=True)
class Column:
    """A table column as the contract sees it: `kind` is NUMERIC, CATEGORICAL or None (unsupported)."""

    name: str
    sql_type: str
    kind: str | None


def kind_of(type_category: str) -> str | None:
    """pg_type.typcategory: N numeric, S string, B boolean; anything else is not a feature type."""
    return {"N": NUMERIC, "S": CATEGORICAL, "B": CATEGORICAL}.get(type_category)


def is_feature(name: str) -> bool:
    return name not in NON_FEATURE_COLUMNS and not name.startswith("_")


def table_columns(conn: psycopg.Connection, schema: str, table: str) -> list[Column] | None:
    """Every column of `schema.table` in table order, or None when the table does not exist."""
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
    return [Column(str(name), str(sql_type), kind_of(str(category))) for name, sql_type, category in rows]


def feature_columns(columns: list[Column]) -> list[Column]:
    """The feature columns among `columns`, in table order."""
    return [c for c in columns if is_feature(c.name)]
