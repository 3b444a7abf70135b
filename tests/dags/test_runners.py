"""The three runners build operators for the same command lines; the Kubernetes pods and Docker
containers render offline, without a cluster or an engine (issue 6, points 2 and 6)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from dag_helpers import LOGICAL_DATE, load_dag, render_context

from ml_pipeline_lib.config import RunnerConfig
from ml_pipeline_lib.constants import LIBPQ_VARIABLES, STAGE_UID, RunnerMode
from ml_pipeline_lib.runners import get_runner
from ml_pipeline_lib.stages import PREDICT, STAGES, shard_label

K8S_VERSION = "1.33.0"  # the schema the pods are validated against (kind's default node line)
STATIC_STAGES = [name for name in STAGES if name != PREDICT.name]
SHARD_ARGV = PREDICT.argv(ds=LOGICAL_DATE, shard=shard_label(1, 2))


def rendered_stage(runner_name: str, name: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[Any, Any]:
    """The stage's task from the DAG, rendered for LOGICAL_DATE (the predict shard: unmapped, shard 1/2)."""
    dag = load_dag(runner_name, monkeypatch, **env)
    runner = get_runner(RunnerConfig.from_env())
    if name == PREDICT.name:
        kwargs = {k: v for k, v in dag.get_task(name).partial_kwargs.items() if k not in ("task_id",)}
        op = runner.operator_class()(task_id="predict_shard", argv=SHARD_ARGV, dag=dag, **_init_kwargs(kwargs))
    else:
        op = dag.get_task(name)
    op.render_template_fields(render_context(dag))
    return op, runner


def _init_kwargs(partial: dict[str, Any]) -> dict[str, Any]:
    """Partial kwargs minus the BaseOperator defaults Airflow adds for every mapped task."""
    keep = {"retries", "retry_delay", "retry_exponential_backoff", "max_retry_delay", "execution_timeout", "stage_name"}
    from airflow.sdk import BaseOperator

    base = set(BaseOperator.__init__.__code__.co_varnames)  # type: ignore[misc]
    return {k: v for k, v in partial.items() if k in keep or k not in base}


def expected_argv(name: str) -> list[str]:
    if name == PREDICT.name:
        return SHARD_ARGV
    dag_params = {"cadence_days": "7", "auc_floor": "0.6", "tolerance": "0.0"}
    values = {
        "ds": LOGICAL_DATE,
        "run_id": f"scheduled__{LOGICAL_DATE}T00:00:00+00:00",
        "stages_json": '{"ingest": {"result": {"rows": 3}}}',
    }
    return STAGES[name].argv(**{k: v for k, v in {**dag_params, **values}.items() if k in STAGES[name].placeholders()})


@pytest.mark.parametrize("name", list(STAGES))
def test_argv_is_identical_across_the_three_runners(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    for mode in RunnerMode:
        op, runner = rendered_stage(mode.value, name, monkeypatch)
        seen[mode.value] = runner.effective_argv(op)
    assert seen["local"] == seen["docker"] == seen["kubernetes"] == expected_argv(name)
    assert not any("{{" in part for part in seen["local"])


def pod_dict(op: Any) -> dict[str, Any]:
    from kubernetes.client import ApiClient

    pod = op.build_pod_request_obj(dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)


@pytest.mark.parametrize("name", list(STAGES))
def test_pod_renders_offline_validates_and_is_hardened(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    op, _ = rendered_stage("kubernetes", name, monkeypatch, PIPELINE_IMAGE_TAG="1.4.2")
    pod = pod_dict(op)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)

    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == STAGE_UID
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"]:  # the stage and the XCom sidecar
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == STAGE_UID
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
    [base] = [c for c in spec["containers"] if c["name"] == "base"]
    assert base["image"] == f"ml-pipeline/{STAGES[name].image}:1.4.2"
    assert base["command"] + base["args"] == expected_argv(name)
    resources = STAGES[name].resources
    assert base["resources"] == {"requests": resources.requests(), "limits": resources.limits()}
    # credentials only from the Secret; none of the libpq variables is set inline
    assert base["envFrom"] == [{"secretRef": {"name": "warehouse-credentials"}}]
    assert not {e["name"] for e in base["env"]} & set(LIBPQ_VARIABLES)
    env = {e["name"]: e["value"] for e in base["env"]}
    assert env["PIPELINE_RUN_ID"] == f"scheduled__{LOGICAL_DATE}T00:00:00+00:00"
    # writable paths are volumes; /airflow/xcom is the sidecar's
    mounts = {m["mountPath"] for m in base["volumeMounts"]}
    assert {"/tmp", "/airflow/xcom"} <= mounts
    if STAGES[name].needs_landing:
        assert env["PIPELINE_LANDING_DIR"] == "/data/landing"
        assert any(m["mountPath"] == "/data/landing" and m.get("readOnly") for m in base["volumeMounts"])
    assert op.on_finish_action.value == "delete_pod"
    assert op.get_logs is True and op.do_xcom_push is True


def test_dbt_pods_write_target_and_logs_to_the_scratch_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    op, _ = rendered_stage("kubernetes", "dbt_marts", monkeypatch)
    env = {e["name"]: e["value"] for e in pod_dict(op)["spec"]["containers"][0]["env"]}
    assert env["DBT_TARGET_PATH"].startswith("/tmp/") and env["DBT_LOG_PATH"].startswith("/tmp/")


def test_image_tag_comes_from_the_environment_and_is_never_latest(monkeypatch: pytest.MonkeyPatch) -> None:
    from ml_pipeline_lib.config import PipelineConfigError

    assert RunnerConfig.from_env({"PIPELINE_IMAGE_TAG": "2.0.1"}).image("trainer") == "ml-pipeline/trainer:2.0.1"
    assert RunnerConfig.from_env({}).image("dbt").endswith(":0.1.0")
    for bad in ({"PIPELINE_IMAGE_TAG": "latest"}, {"PIPELINE_IMAGE_TAG": ""}, {"PIPELINE_IMAGE_REPO": "reg/ml:latest"}):
        with pytest.raises(PipelineConfigError):
            RunnerConfig.from_env(bad)


@pytest.mark.parametrize("name", list(STAGES))
def test_docker_operator_renders_without_an_engine(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    landing, reports = tmp_path / "landing", tmp_path / "reports"
    op, _ = rendered_stage("docker", name, monkeypatch, PIPELINE_LANDING_DIR=str(landing), PIPELINE_REPORTS_DIR=str(reports))
    spec = STAGES[name]
    assert op.image == f"ml-pipeline/{spec.image}:0.1.0"
    assert op.extra_hosts == {"host.docker.internal": "host-gateway"}
    assert op.environment["PIPELINE_RESULT_PATH"] == op.retrieve_output_path == "/tmp/pipeline-result.json"
    assert op.retrieve_output is True and op.auto_remove == "never"
    assert not set(op.environment) & set(LIBPQ_VARIABLES)  # credentials never in the rendered fields
    mounts = {m["Target"]: m for m in op.mounts}
    if spec.needs_landing:
        assert mounts["/data/landing"]["Source"] == str(landing) and mounts["/data/landing"]["ReadOnly"] is True
    if spec.needs_reports:
        assert mounts["/data/reports"]["Source"] == str(reports) and mounts["/data/reports"]["ReadOnly"] is False
    assert op.mem_limit == spec.resources.memory_limit.replace("Gi", "g").replace("Mi", "m")


def test_docker_runner_points_a_host_local_warehouse_at_the_host_gateway() -> None:
    from ml_pipeline_lib.runners.docker import container_libpq_env

    env = container_libpq_env({"PGHOST": "127.0.0.1", "PGPORT": "5433", "PGUSER": "u", "HOME": "/root"}, "host.docker.internal")
    assert env == {"PGHOST": "host.docker.internal", "PGPORT": "5433", "PGUSER": "u"}
    assert container_libpq_env({"PGHOST": "/tmp/sock"}, "gw")["PGHOST"] == "gw"
    assert container_libpq_env({"PGHOST": "db.internal"}, "gw")["PGHOST"] == "db.internal"


def test_local_runner_runs_the_stage_in_its_own_uv_project(monkeypatch: pytest.MonkeyPatch) -> None:
    from dag_helpers import REPO_ROOT

    op, _ = rendered_stage("local", "dbt_staging", monkeypatch)
    command = op.command()
    assert command[1:6] == ["run", "--quiet", "--frozen", "--project", str(REPO_ROOT / "dbt")]
    assert command[6:] == ["--", *expected_argv("dbt_staging")]
    assert op.env["DBT_PROJECT_DIR"] == str(REPO_ROOT / "dbt")


# The connection the k8s/ helm values and `make kind-connection` configure: the XCom sidecar's
# image, requests/limits and security context come from it.
KIND_CONNECTION = json.dumps(
    {
        "conn_type": "kubernetes",
        "extra": {
            "xcom_sidecar_container_image": "ml-pipeline/xcom-sidecar:3.24.2",
            "xcom_sidecar_container_resources": json.dumps(
                {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}
            ),
        },
    }
)
POLICY = Path(__file__).resolve().parents[1] / "k8s" / "policy.py"


@pytest.mark.skipif(not POLICY.is_file(), reason="tests/k8s/policy.py (the k8s part's offline pod policy) is not in this checkout")
@pytest.mark.parametrize("name", list(STAGES))
def test_pods_pass_the_cluster_policy_of_k8s(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("k8s_policy", POLICY)
    assert spec is not None and spec.loader is not None
    policy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(policy)
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", KIND_CONNECTION)
    op, _ = rendered_stage("kubernetes", name, monkeypatch)
    assert policy.violations(op.build_pod_request_obj(dry_run=True)) == []


def test_pods_follow_the_k8s_deployment_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names and settings the k8s/ manifests define (docs/kubernetes.md, "Contract for the DAG's kubernetes runner")."""
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", KIND_CONNECTION)
    op, _ = rendered_stage(
        "kubernetes",
        "ingest",
        monkeypatch,
        PIPELINE_IMAGE_INGEST="registry.example.com/ml-pipeline/ingest:2.3.4",
        PIPELINE_K8S_IMAGE_PULL_POLICY="Always",
    )
    pod = pod_dict(op)
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "stage"
    assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ml-pipeline"
    assert pod["spec"]["serviceAccountName"] == "ml-pipeline-stage"
    [base] = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    assert (base["image"], base["imagePullPolicy"]) == ("registry.example.com/ml-pipeline/ingest:2.3.4", "Always")
    assert {"name": "HOME", "value": "/tmp"} in base["env"]
    [landing] = [v for v in pod["spec"]["volumes"] if v["name"] == "landing"]
    assert landing["persistentVolumeClaim"] == {"claimName": "landing-data", "readOnly": True}
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] != "base")
    assert sidecar["image"] == "ml-pipeline/xcom-sidecar:3.24.2"

    trainer, _ = rendered_stage("kubernetes", "train", monkeypatch)
    env = {e["name"]: e.get("value") for e in pod_dict(trainer)["spec"]["containers"][0]["env"]}
    assert env["PIPELINE_REPORTS_DIR"] == "/tmp/reports"  # no reports claim configured: the scratch volume


def test_image_overrides_must_be_pinned() -> None:
    from ml_pipeline_lib.config import PipelineConfigError

    config = RunnerConfig.from_env({"PIPELINE_IMAGE_DBT": "reg.io/dbt@sha256:" + "a" * 64})
    assert config.image("dbt").endswith("a" * 64) and config.image("trainer") == "ml-pipeline/trainer:0.1.0"
    for bad in ("reg.io/ml-pipeline/dbt", "reg.io:5000/dbt", "dbt:latest"):
        with pytest.raises(PipelineConfigError, match="PIPELINE_IMAGE_DBT"):
            RunnerConfig.from_env({"PIPELINE_IMAGE_DBT": bad})


def finished_pod(exit_code: int) -> Any:
    """A pod as the API reports it after its stage container terminated with `exit_code`."""
    from kubernetes.client import models as k8s

    terminated = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=exit_code))
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="mlp-ingest-abc", namespace="ml-pipeline", labels={}),
        status=k8s.V1PodStatus(
            phase="Failed",
            container_statuses=[
                k8s.V1ContainerStatus(name="base", state=terminated, ready=False, restart_count=0, image="i", image_id="i"),
            ],
        ),
    )


@pytest.mark.slow  # the cleanup's API calls retry against the closed port: ~15 s per case
@pytest.mark.parametrize(("exit_code", "retryable"), [(20, False), (1, True)])
def test_pod_exit_code_decides_whether_airflow_retries(
    exit_code: int, retryable: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """KubernetesPodOperator's cleanup() sees the finished pod; the stage's exit code rides on the failure.

    No cluster: the pod status is the API's answer for a failed stage container, and the cleanup's
    own API calls (patch, delete) go to a closed port and fail quietly, as they do when a pod is gone."""
    from airflow.sdk.exceptions import AirflowFailException

    from ml_pipeline_lib.runners.base import StageFailed

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "none", "user": {}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    # through the connection: the kubernetes client reads $KUBECONFIG only once, when first imported
    monkeypatch.setenv(
        "AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}})
    )
    op, _ = rendered_stage("kubernetes", "ingest", monkeypatch)
    op.log_events_on_failure = False
    pod = finished_pod(exit_code)
    # execute() wraps the launcher (here: just the cleanup of the finished pod, as execute_sync ends)
    monkeypatch.setattr(type(op), "_launch", lambda self, context: self.cleanup(pod, pod))
    with pytest.raises((StageFailed, AirflowFailException)) as failure:
        op.execute({})
    stage_failure = failure.value if isinstance(failure.value, StageFailed) else failure.value.__cause__
    assert isinstance(stage_failure, StageFailed) and stage_failure.exit_code == exit_code
    # non-retryable codes become AirflowFailException, which Airflow never retries
    assert isinstance(failure.value, AirflowFailException) is not retryable
