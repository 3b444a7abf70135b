"""The policy catches each insecure setting on its own: a compliant stage pod, then one defect at a time.

If a check in policy.py were dropped or weakened, the matching case here fails; that is what makes
the overlay tests' "no violations" meaningful.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.k8s.k8s_samples import stage_pod
from tests.k8s.policy import violations


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Mutation that sets a dotted path inside the first container (or the pod spec with `spec.`)."""

    def mutate(pod: dict[str, Any]) -> None:
        node = pod["spec"] if path.startswith("spec.") else _container(pod)
        keys = path.removeprefix("spec.").split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value

    return mutate


_DELETE = object()


def test_compliant_stage_pod_passes() -> None:
    assert violations(stage_pod()) == []


BAD_PODS = {
    "runAsNonRoot missing": (_set("spec.securityContext.runAsNonRoot", _DELETE), "runAsNonRoot is not true"),
    "runAsNonRoot overridden false in the container": (_set("securityContext.runAsNonRoot", False), "runAsNonRoot is not true"),
    "runs as uid 0": (_set("spec.securityContext.runAsUser", 0), "runAsUser is 0"),
    "writable root filesystem": (_set("securityContext.readOnlyRootFilesystem", False), "readOnlyRootFilesystem is not true"),
    "privilege escalation allowed": (_set("securityContext.allowPrivilegeEscalation", _DELETE), "allowPrivilegeEscalation is not false"),
    "privileged": (_set("securityContext.privileged", True), "privileged is true"),
    "capabilities not dropped": (_set("securityContext.capabilities", {"drop": ["NET_RAW"]}), "capabilities do not drop ALL"),
    "capability added": (_set("securityContext.capabilities.add", ["SYS_ADMIN"]), "capabilities added: SYS_ADMIN"),
    "missing limits": (_set("resources.limits", _DELETE), "limits missing for cpu, memory"),
    "missing memory request": (_set("resources.requests", {"cpu": "1"}), "requests missing for memory"),
    "latest tag": (_set("image", "ml-pipeline/ingest:latest"), "uses the latest tag"),
    "untagged image": (_set("image", "ml-pipeline/ingest"), "has no tag"),
    "registry port but no tag": (_set("image", "registry.local:5000/ml-pipeline/ingest"), "has no tag"),
    "literal password env": (_set("env", [{"name": "PGPASSWORD", "value": "hunter2"}]), "env PGPASSWORD has a literal value"),
    "literal api key env": (_set("env", [{"name": "MLFLOW_API_KEY", "value": "abc"}]), "env MLFLOW_API_KEY has a literal value"),
    "password inside a URL": (
        _set("env", [{"name": "DATABASE_URL", "value": "postgresql://app:hunter2@warehouse:5432/wh"}]),
        "env DATABASE_URL holds a URL with a password",
    ),
    "token mounted (default)": (_set("spec.automountServiceAccountToken", _DELETE), "service-account token is mounted"),
    "token mounted (explicit)": (_set("spec.automountServiceAccountToken", True), "service-account token is mounted"),
    "token projected as a volume": (
        _set("spec.volumes", [{"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]),
        "volume tok projects a service-account token",
    ),
    "hostPath volume": (_set("spec.volumes", [{"name": "host", "hostPath": {"path": "/"}}]), "volume host is a hostPath"),
    "host network": (_set("spec.hostNetwork", True), "hostNetwork is true"),
}


@pytest.mark.parametrize("case", BAD_PODS, ids=list(BAD_PODS))
def test_each_defect_is_caught(case: str) -> None:
    mutate, expected = BAD_PODS[case]
    pod = copy.deepcopy(stage_pod())
    mutate(pod)
    found = violations(pod)
    assert any(expected in problem for problem in found), f"{case}: expected {expected!r} in {found}"
    assert all(problem.startswith("Pod/ingest-load") for problem in found)


def test_defects_are_caught_in_workload_templates_and_init_containers() -> None:
    """The same checks reach pod templates of controllers and init containers, not only bare Pods."""
    pod = stage_pod()
    bad_init = {**copy.deepcopy(_container(pod)), "name": "wait", "image": "busybox:latest"}
    spec = {**pod["spec"], "initContainers": [bad_init]}
    for kind, wrap in {
        "Deployment": {"spec": {"template": {"spec": spec}}},
        "StatefulSet": {"spec": {"template": {"spec": spec}}},
        "Job": {"spec": {"template": {"spec": spec}}},
        "CronJob": {"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}},
        "PodTemplate": {"template": {"spec": spec}},
    }.items():
        found = violations({"kind": kind, "metadata": {"name": "w"}, **wrap})
        where = "jobTemplate" if kind == "CronJob" else "template"
        assert found == [f"{kind}/w {where}: initContainer wait: image busybox:latest uses the latest tag (pin a version)"]


def test_several_defects_are_all_reported() -> None:
    pod = stage_pod()
    _container(pod)["image"] = "ml-pipeline/ingest:latest"
    _container(pod)["resources"] = {}
    del pod["spec"]["automountServiceAccountToken"]
    assert len(violations(pod)) == 4  # latest tag, requests, limits, token


def test_secret_with_committed_values_is_caught_and_empty_one_is_not() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "warehouse-credentials"}, "data": {"PGPASSWORD": "aHVudGVyMg=="}}
    advice = "create it from the environment instead"
    assert violations(secret) == [f"Secret/warehouse-credentials: Secret with committed values (PGPASSWORD); {advice}"]
    assert violations({**secret, "data": {}, "stringData": {"PGUSER": "app"}})[0].endswith(f"(PGUSER); {advice}")
    assert violations({"kind": "Secret", "metadata": {"name": "empty"}, "type": "Opaque"}) == []


def test_lists_are_checked_item_by_item() -> None:
    bad = copy.deepcopy(stage_pod())
    _container(bad)["image"] = "ml-pipeline/ingest"
    found = violations({"kind": "List", "items": [stage_pod(), bad]})
    assert found == ["Pod/ingest-load: container base: image ml-pipeline/ingest has no tag (pin one)"]


def test_digest_pinned_and_registry_port_images_are_accepted() -> None:
    for image in ("registry.local:5000/ml-pipeline/ingest:0.1.0", "ml-pipeline/ingest@sha256:" + "a" * 64):
        pod = stage_pod()
        _container(pod)["image"] = image
        assert violations(pod) == [], image


def test_token_allowed_exempts_only_the_token_check() -> None:
    pod = stage_pod()
    del pod["spec"]["automountServiceAccountToken"]
    assert violations(pod, token_allowed=True) == []
    _container(pod)["image"] = "x:latest"
    assert len(violations(pod, token_allowed=True)) == 1


def test_non_secret_env_and_secret_refs_are_fine() -> None:
    pod = stage_pod()
    _container(pod)["env"] += [
        {"name": "PIPELINE_PASSTHROUGH_MODE", "value": "on"},  # PASS inside a word is not a password
        {"name": "DBT_PROFILES_DIR", "value": "/app/dbt"},
        {"name": "API_TOKEN", "value": ""},  # empty: nothing secret in it
        {"name": "WAREHOUSE_URL", "value": "postgresql://warehouse:5432/wh"},  # no password in it
    ]
    assert violations(pod) == []


def test_kubernetes_client_models_are_accepted() -> None:
    """The DAG's tests can pass the V1Pod that KubernetesPodOperator builds, without converting it."""
    client = pytest.importorskip("kubernetes.client", reason="the kubernetes client is not installed in this environment")
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="p"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="base", image="ml-pipeline/dbt:latest")]),
    )
    found = violations(pod)
    assert "Pod/p: container base: image ml-pipeline/dbt:latest uses the latest tag (pin a version)" in found
    assert "Pod/p: service-account token is mounted (set automountServiceAccountToken: false)" in found


def test_other_objects_have_nothing_to_check_and_junk_is_refused() -> None:
    assert violations({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"A": "b"}}) == []
    empty_pod = {"kind": "Pod", "metadata": {"name": "empty"}, "spec": {"automountServiceAccountToken": False}}
    assert violations(empty_pod) == ["Pod/empty: no containers"]
    with pytest.raises(TypeError):
        violations("kind: Pod")
