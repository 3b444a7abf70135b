"""Kubernetes runner: each stage as a pod (`KubernetesPodOperator`), hardened.

- Pinned image `<repo>/<image>:<PIPELINE_IMAGE_TAG>` (never `latest`, see config.py).
- libpq variables only from the Secret `warehouse-credentials` (`Secret("env", None, ...)`: every
  key of the Secret becomes an environment variable); no credentials in the DAG.
- Settings from the environment (k8s/'s `pipeline-config` ConfigMap): namespace, service account
  (`ml-pipeline-stage`, no token), Secret name, landing claim (`landing-data`), pull policy, and
  per-image overrides `PIPELINE_IMAGE_<NAME>` (see config.py).
- Requests and limits per stage; pod and containers non-root (uid 10001), read-only root
  filesystem, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp, no
  service-account token. Writable paths are volumes: `/tmp` (emptyDir, scratch, also `HOME`), the
  landing folder (PVC, read-only) for ingest, and the trainer's reports under `/tmp/reports` (or
  on the claim `PIPELINE_K8S_REPORTS_PVC` when set).
- Logs streamed (`get_logs`), result read from `/airflow/xcom/return.json` by the XCom sidecar,
  pod deleted when it finishes.
- Exit codes: `cleanup()` sees the finished pod; the base container's exit code is attached to the
  failure, so non-retryable codes fail at once (see base.py).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.secret import Secret
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s

from ml_pipeline_lib.constants import (
    CONTAINER_LANDING_DIR,
    CONTAINER_REPORTS_DIR,
    CONTAINER_SCRATCH_DIR,
    ENV_LANDING_DIR,
    ENV_REPORTS_DIR,
    STAGE_UID,
)
from ml_pipeline_lib.runners.base import Runner, StageFailed, StageOperatorMixin
from ml_pipeline_lib.stages import StageSpec


def pod_security_context() -> k8s.V1PodSecurityContext:
    return k8s.V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=STAGE_UID,
        run_as_group=STAGE_UID,
        fs_group=STAGE_UID,
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def container_security_context() -> k8s.V1SecurityContext:
    return k8s.V1SecurityContext(
        run_as_non_root=True,
        run_as_user=STAGE_UID,
        run_as_group=STAGE_UID,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        privileged=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def base_container_exit_code(remote_pod: Any, container_name: str) -> int | None:
    statuses = (remote_pod.status.container_statuses if remote_pod is not None and remote_pod.status else None) or []
    for status in statuses:
        if status.name == container_name and status.state and status.state.terminated:
            return int(status.state.terminated.exit_code)
    return None


class PodStageOperator(StageOperatorMixin, KubernetesPodOperator):
    """`KubernetesPodOperator` running one stage command line as the container's command/args."""

    ui_color = "#eae5f8"

    def __init__(self, *, argv: list[str], stage_name: str = "", **kwargs: Any) -> None:
        argv = list(argv)
        super().__init__(cmds=argv[:1], arguments=argv[1:], **kwargs)
        self.stage_name = stage_name or self.task_id

    def cleanup(self, pod: Any, remote_pod: Any, xcom_result: dict | None = None, context: Any = None) -> None:
        try:
            super().cleanup(pod, remote_pod, xcom_result=xcom_result, context=context)
        except AirflowException as exc:
            code = base_container_exit_code(remote_pod, self.base_container_name)
            if code is None:
                raise
            raise StageFailed(f"stage {self.stage_name}: {exc}", code) from exc


class KubernetesRunner(Runner):
    """Pods in `PIPELINE_K8S_NAMESPACE` (default `ml-pipeline`)."""

    def operator_class(self) -> type:
        return PodStageOperator

    def operator_kwargs(self, spec: StageSpec) -> dict[str, Any]:
        env = {**self.stage_env(spec), **spec.container_env, "HOME": CONTAINER_SCRATCH_DIR}
        volumes = [k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="1Gi"))]
        mounts = [k8s.V1VolumeMount(name="scratch", mount_path=CONTAINER_SCRATCH_DIR)]
        if spec.needs_landing:
            env[ENV_LANDING_DIR] = CONTAINER_LANDING_DIR
            volumes.append(
                k8s.V1Volume(
                    name="landing",
                    persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=self.config.landing_pvc, read_only=True),
                )
            )
            mounts.append(k8s.V1VolumeMount(name="landing", mount_path=CONTAINER_LANDING_DIR, read_only=True))
        if spec.needs_reports and self.config.reports_pvc:
            env[ENV_REPORTS_DIR] = CONTAINER_REPORTS_DIR
            claim = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=self.config.reports_pvc)
            volumes.append(k8s.V1Volume(name="reports", persistent_volume_claim=claim))
            mounts.append(k8s.V1VolumeMount(name="reports", mount_path=CONTAINER_REPORTS_DIR))
        elif spec.needs_reports:  # no claim configured: the report lives as long as the pod (its path is in the result)
            env[ENV_REPORTS_DIR] = f"{CONTAINER_SCRATCH_DIR}/reports"
        return {
            "image": self.config.image(spec.image),
            "image_pull_policy": self.config.image_pull_policy,
            "service_account_name": self.config.service_account,
            "namespace": self.config.namespace,
            "name": f"mlp-{spec.name.replace('_', '-')}",
            "labels": {
                "app.kubernetes.io/part-of": "ml-pipeline",
                "app.kubernetes.io/component": "stage",
                "ml-pipeline/stage": spec.name.replace("_", "-"),
            },
            "env_vars": env,
            "secrets": [Secret("env", None, self.config.warehouse_secret)],
            "container_resources": k8s.V1ResourceRequirements(requests=spec.resources.requests(), limits=spec.resources.limits()),
            "security_context": pod_security_context(),
            "container_security_context": container_security_context(),
            "xcom_sidecar_container_security_context": container_security_context(),
            "automount_service_account_token": False,
            "volumes": volumes,
            "volume_mounts": mounts,
            "on_finish_action": "delete_pod",
            "get_logs": True,
            "do_xcom_push": True,
            "log_events_on_failure": True,
            "random_name_suffix": True,
        }

    @staticmethod
    def effective_argv(operator: Any) -> list[str]:
        return [*operator.cmds, *operator.arguments]
