"""Names shared by the DAG, the runners and the tests: runner modes and the environment they read."""

from __future__ import annotations

from enum import StrEnum


class RunnerMode(StrEnum):
    """How a stage is launched; the stage's command line is the same in every mode."""

    LOCAL = "local"
    DOCKER = "docker"
    KUBERNETES = "kubernetes"


DEFAULT_RUNNER = RunnerMode.LOCAL

# Environment read by the runners (all optional; defaults in config.py).
ENV_RUNNER = "PIPELINE_RUNNER"
ENV_REPO_ROOT = "PIPELINE_REPO_ROOT"
ENV_LANDING_DIR = "PIPELINE_LANDING_DIR"
ENV_REPORTS_DIR = "PIPELINE_REPORTS_DIR"
ENV_IMAGE_REPO = "PIPELINE_IMAGE_REPO"
ENV_IMAGE_TAG = "PIPELINE_IMAGE_TAG"
ENV_K8S_NAMESPACE = "PIPELINE_K8S_NAMESPACE"
ENV_K8S_LANDING_PVC = "PIPELINE_K8S_LANDING_PVC"
ENV_K8S_REPORTS_PVC = "PIPELINE_K8S_REPORTS_PVC"
ENV_K8S_SERVICE_ACCOUNT = "PIPELINE_K8S_SERVICE_ACCOUNT"
ENV_K8S_WAREHOUSE_SECRET = "PIPELINE_K8S_WAREHOUSE_SECRET"
ENV_K8S_IMAGE_PULL_POLICY = "PIPELINE_K8S_IMAGE_PULL_POLICY"
ENV_IMAGE_OVERRIDE_PREFIX = "PIPELINE_IMAGE_"  # PIPELINE_IMAGE_DBT=registry/ml-pipeline/dbt:1.2.3 (k8s/ pipeline-config)
ENV_DOCKER_URL = "PIPELINE_DOCKER_URL"
ENV_DOCKER_PGHOST = "PIPELINE_DOCKER_PGHOST"
ENV_ALERT_WEBHOOK = "PIPELINE_ALERT_WEBHOOK"
ENV_RESULT_PATH = "PIPELINE_RESULT_PATH"
ENV_RUN_ID = "PIPELINE_RUN_ID"

# The libpq variables every stage reads (mlp_common.warehouse.LIBPQ_VARIABLES, repeated here so
# that parsing the DAG does not import psycopg).
LIBPQ_VARIABLES = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSSLMODE")

# Kubernetes: the Secret holding the libpq variables, and the uid every stage image runs as.
WAREHOUSE_SECRET = "warehouse-credentials"
STAGE_UID = 10001

# Where stages see their folders inside a container or pod.
CONTAINER_LANDING_DIR = "/data/landing"
CONTAINER_REPORTS_DIR = "/data/reports"
CONTAINER_SCRATCH_DIR = "/tmp"
CONTAINER_RESULT_PATH = "/tmp/pipeline-result.json"
KPO_RESULT_PATH = "/airflow/xcom/return.json"

# XCom key under which every runner pushes the stage's timing and exit status.
TIMING_XCOM_KEY = "stage_timing"
