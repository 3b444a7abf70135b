"""Build, export and register a small churn model the way the trainer does (written once, used by tests and the benchmark).

The artifact follows the trainer/predictor contract exactly: one ONNX input per feature named as the
feature, shape [None, 1], float32 for numeric (NaN for NULL) and string for categorical (NULL ->
"__missing__"); output `probabilities` [None, 2] with zipmap disabled; column 1 = churn.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlp_common import registry

MISSING = "__missing__"
FEATURES_TABLE = "marts.customer_churn_features"

# name -> SQL type of the synthetic features mart; the model's features follow this order.
DEFAULT_COLUMNS: dict[str, str] = {
    "days_since_last_transaction": "integer",
    "transactions_90d": "bigint",
    "spend_90d": "double precision",
    "avg_amount_90d": "double precision",
    "region": "text",
    "account_type": "text",
}
REGIONS = ["north", "south", "east", "west"]
ACCOUNT_TYPES = ["basic", "premium"]


def feature_spec(columns: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": n, "type": "categorical" if t in ("text", "boolean") else "numeric"} for n, t in columns.items()]


def synthetic_frame(n: int, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    """Feature rows in the shape of the mart (with some NULLs), and a label that depends on them."""
    rng = np.random.default_rng(seed)
    days = rng.integers(0, 200, n).astype(float)
    tx = rng.poisson(12, n).astype(float)
    spend = np.round(rng.gamma(2.0, 40.0, n), 2)
    avg = np.where(tx > 0, np.round(spend / np.maximum(tx, 1), 2), np.nan)
    days[rng.random(n) < 0.05] = np.nan
    region = rng.choice(REGIONS, n).astype(object)
    region[rng.random(n) < 0.05] = None
    account = rng.choice(ACCOUNT_TYPES, n).astype(object)
    logit = 0.02 * np.nan_to_num(days, nan=100) - 0.15 * tx + (account == "basic") * 0.8 - 0.5
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "days_since_last_transaction": days,
            "transactions_90d": tx,
            "spend_90d": spend,
            "avg_amount_90d": avg,
            "region": region,
            "account_type": account,
        }
    )
    return frame, churned.astype(int)


def to_model_inputs(frame: pd.DataFrame, features: list[dict[str, str]]) -> pd.DataFrame:
    out = {}
    for f in features:
        col = frame[f["name"]]
        out[f["name"]] = col.astype("float32") if f["type"] == "numeric" else col.astype(object).where(col.notna(), MISSING).astype(str)
    return pd.DataFrame(out)


def build_onnx(columns: dict[str, str] | None = None, n_train: int = 2000, seed: int = 7) -> tuple[bytes, list[dict[str, str]], np.ndarray]:
    """Fit a small pipeline and export it per the contract; returns (artifact, features, training scores)."""
    return _build(tuple((columns or DEFAULT_COLUMNS).items()), n_train, seed)


@lru_cache(maxsize=8)
def _build(column_items: tuple[tuple[str, str], ...], n_train: int, seed: int) -> tuple[bytes, list[dict[str, str]], np.ndarray]:
    columns = dict(column_items)
    features = feature_spec(columns)
    frame, label = synthetic_frame(n_train, seed)
    for name in columns:
        if name not in frame:
            frame[name] = (np.arange(len(frame)) % 7).astype(float) if columns[name] not in ("text", "boolean") else "x"
    x = to_model_inputs(frame, features)
    numeric = [f["name"] for f in features if f["type"] == "numeric"]
    categorical = [f["name"] for f in features if f["type"] == "categorical"]
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    )
    pipeline.fit(x, label)
    initial_types = [(f["name"], FloatTensorType([None, 1]) if f["type"] == "numeric" else StringTensorType([None, 1])) for f in features]
    onnx_model = convert_sklearn(pipeline, initial_types=initial_types, options={id(pipeline): {"zipmap": False}}, target_opset=17)
    scores = pipeline.predict_proba(x)[:, 1]
    return onnx_model.SerializeToString(), features, scores


def score_reference(scores: np.ndarray) -> dict[str, list[float]]:
    """Decile bins of the training scores, as the trainer records them."""
    edges = np.quantile(scores, np.linspace(0, 1, 11))
    inner = np.searchsorted(edges[1:-1], scores, side="right")
    proportions = np.bincount(inner, minlength=10) / len(scores)
    return {"bin_edges": [float(e) for e in edges], "proportions": [float(p) for p in proportions]}


@dataclass
class Registered:
    version: int
    features: list[dict[str, str]]
    artifact: bytes


def register_model(conn: psycopg.Connection, *, columns: dict[str, str] | None = None, promote: bool = True, seed: int = 7) -> Registered:
    """Register (and by default promote) a freshly built model in the warehouse's registry."""
    artifact, features, scores = build_onnx(columns, seed=seed)
    registry.ensure_schema(conn)
    version = registry.register(
        conn,
        registry.NewVersion(
            as_of_date=date(2025, 1, 1),
            data_window={"from": "2024-01-01", "to": "2024-10-01"},
            row_counts={"train": len(scores)},
            class_balance={"churned": 0.5},
            features=features,
            metrics={"auc": 0.7},
            score_reference=score_reference(scores),
            code_version="test",
            artifact=artifact,
        ),
    )
    if promote:
        current = registry.champion(conn)
        assert registry.promote(conn, version, compared_with=None if current is None else current.version, reason="test")
    return Registered(version, features, artifact)


def create_features_mart(conn: psycopg.Connection, columns: dict[str, str] | None = None) -> None:
    columns = columns or DEFAULT_COLUMNS
    cols = sql.SQL(",\n    ").join(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(sql_type)) for name, sql_type in columns.items())
    conn.execute("create schema if not exists marts")
    conn.execute(
        sql.SQL(
            """create table {} (
    as_of_date date not null,
    customer_id text not null,
    {},
    _dbt_invocation_id text,
    _built_at timestamptz default now(),
    primary key (as_of_date, customer_id)
)"""
        ).format(sql.SQL(FEATURES_TABLE), cols)
    )


def fill_features(conn: psycopg.Connection, as_of_date: date, n: int, *, seed: int = 11, prefix: str = "c") -> None:
    """Insert n synthetic customers for one snapshot (in SQL: fast enough for a million rows)."""
    conn.execute(
        f"""
        insert into {FEATURES_TABLE}
            (as_of_date, customer_id, days_since_last_transaction, transactions_90d, spend_90d, avg_amount_90d, region, account_type,
             _dbt_invocation_id)
        select %(d)s::date, %(prefix)s || lpad(i::text, 8, '0'),
            case when r1 < 0.05 then null else floor(r1 * 200)::int end,
            floor(r2 * 25)::bigint,
            round((r3 * 300)::numeric, 2)::float8,
            case when floor(r2 * 25) = 0 then null else round((r3 * 300 / greatest(floor(r2 * 25), 1))::numeric, 2)::float8 end,
            case when r4 < 0.05 then null else (array['north', 'south', 'east', 'west', 'mars'])[1 + floor(r4 * 5)::int] end,
            (array['basic', 'premium'])[1 + floor(r5 * 2)::int],
            'inv-test'
        from (
            select i, random() as r1, random() as r2, random() as r3, random() as r4, random() as r5
            from generate_series(1, %(n)s) as i
        ) as g
        """,
        {"d": as_of_date, "n": n, "prefix": prefix},
    )
