"""Reading the training set: the label-window filter, NULL handling and dtypes the ONNX contract expects."""

from __future__ import annotations

from datetime import date

import numpy as np
import psycopg
import pytest

from trainer.data import load

pytestmark = pytest.mark.integration


def test_load_keeps_only_closed_label_windows_and_maps_nulls(db: psycopg.Connection) -> None:
    db.execute("create schema marts")
    db.execute(
        """
        create table marts.customer_churn_training_set (
            cutoff_date date, customer_id text, recency_days integer, monetary_total double precision,
            region text, is_business boolean, label_window_end date, churned boolean, _dbt_invocation_id text
        )
        """
    )
    db.execute(
        """
        insert into marts.customer_churn_training_set values
            ('2024-01-01', 'a', 3, 10.5, 'north', true, '2024-04-01', true, 'inv-1'),
            ('2024-01-01', 'b', null, null, null, null, '2024-04-01', false, 'inv-1'),
            ('2024-01-01', 'c', 7, 1.25, '', false, '2024-04-01', false, 'inv-2'),
            ('2024-01-01', 'd', 1, 2.0, 'NULL', false, '2024-04-01', null, 'inv-2'),
            ('2024-02-01', 'e', 9, 3.0, 'south', true, '2024-05-01', true, 'inv-3')
        """
    )
    data = load(db, date(2024, 4, 30))  # the 2024-02-01 snapshot's label window is still open
    assert data.rows == 3  # the unlabelled row is left out too
    assert [f.name for f in data.features] == ["recency_days", "monetary_total", "region", "is_business"]
    assert [f.kind for f in data.features] == ["numeric", "numeric", "categorical", "categorical"]
    recency = data.table.column("recency_days").to_numpy()
    assert recency.dtype == np.float32 and recency[0] == 3 and np.isnan(recency[1])
    # NULL text becomes "__missing__", an empty string stays empty, and the literal text 'NULL' is a value.
    assert data.table.column("region").to_pylist() == ["north", "__missing__", ""]
    assert data.table.column("is_business").to_pylist() == ["true", "__missing__", "false"]
    assert data.labels.tolist() == [1, 0, 0]
    assert data.null_counts == {"recency_days": 1, "monetary_total": 1, "region": 1, "is_business": 1}
    assert data.dbt_invocation_ids == ["inv-1", "inv-2"]
