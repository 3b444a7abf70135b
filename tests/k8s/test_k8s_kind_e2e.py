"""End to end on a real cluster: the DAG runs for two dates on kind and predictions land in the warehouse.

Runs whenever the kind cluster is reachable through the kubeconfig and the overlay is deployed
(`make kind-up images kind-load kind-deploy`, landing files for the dates in .data/landing);
otherwise skips with the reason. These CI machines cannot start kind (no node image can be pulled),
so here it always skips; on a workstation with Docker and kind it is the proof of the whole path.
Dates: KIND_E2E_DATES (comma-separated), default two consecutive days.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess

import psycopg
import pytest

from tests.k8s.k8s_render import REPO, kubectl

pytestmark = [pytest.mark.kubernetes, pytest.mark.slow]

CONTEXT = os.environ.get("KUBE_CONTEXT", "kind-ml-pipeline")
NAMESPACE = "ml-pipeline"
DATES = [d.strip() for d in os.environ.get("KIND_E2E_DATES", "2024-06-01,2024-06-02").split(",") if d.strip()]


def _kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    command = [kubectl(), "--context", CONTEXT, "--namespace", NAMESPACE, "--request-timeout=10s", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def deployed_cluster() -> dict[str, str]:
    """Warehouse credentials of the deployed kind cluster; skips when there is none."""
    probe = _kubectl("get", "statefulset", "warehouse", "-o", "name")
    if probe.returncode != 0:
        reason = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "no answer"
        pytest.skip(f"no deployed kind cluster at context {CONTEXT} ({reason}); run make kind-up images kind-load kind-deploy")
    secret = _kubectl("get", "secret", "warehouse-credentials", "-o", "jsonpath={.data}")
    assert secret.returncode == 0, secret.stderr
    data = {k: base64.b64decode(v).decode() for k, v in json.loads(secret.stdout).items()}
    return {"host": "127.0.0.1", "port": "15432", "dbname": data["PGDATABASE"], "user": data["PGUSER"], "password": data["PGPASSWORD"]}


def _conninfo(settings: dict[str, str]) -> str:
    return psycopg.conninfo.make_conninfo(**settings)


def test_dag_runs_for_two_dates_on_kind_and_writes_predictions(deployed_cluster: dict[str, str]) -> None:
    for ds in DATES:
        command = ["make", "--no-print-directory", "-f", "k8s/kind.mk", "kind-run", f"DS={ds}", f"KUBE_CONTEXT={CONTEXT}"]
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        assert run.returncode == 0, f"kind-run {ds} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        assert f"== prediction batches for {ds}" in run.stdout
    with psycopg.connect(_conninfo(deployed_cluster)) as conn:
        rows = conn.execute(
            "select as_of_date::text, sum(rows), count(distinct model_version) from ml.prediction_batches"
            " where as_of_date = any(%s::date[]) group by as_of_date order by as_of_date",
            (DATES,),
        ).fetchall()
    assert [r[0] for r in rows] == sorted(DATES)
    assert all(total > 0 and versions == 1 for _, total, versions in rows), rows
