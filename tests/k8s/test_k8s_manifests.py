"""Offline checks of k8s/: both overlays render, validate strictly against a pinned Kubernetes schema,
and every object in them passes the security policy; plus the specific promises of the design
(least-privilege Role, stage isolation, no committed credentials, images per overlay)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.k8s.k8s_render import K8S, K8S_VERSION, OVERLAYS, render, schema_errors
from tests.k8s.policy import violations

WORKLOAD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
STAGES = ("dbt", "ingest", "trainer", "predictor")
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "StorageClass"}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


@pytest.fixture(scope="module")
def kind_objects() -> list[dict[str, Any]]:
    return render(K8S / "overlays" / "kind")


@pytest.fixture(scope="module")
def production_objects() -> list[dict[str, Any]]:
    return render(K8S / "overlays" / "production")


def by_kind_name(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def test_overlay_validates_strictly_against_pinned_schema(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    assert len(objects) >= 10, f"{name}: suspiciously few objects"
    errors = [e for obj in objects for e in schema_errors(obj)]
    assert errors == [], f"{name} against Kubernetes {K8S_VERSION}:\n" + "\n".join(errors)


def test_overlay_passes_policy(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    problems = [p for obj in objects for p in violations(obj)]
    assert problems == [], f"{name}:\n" + "\n".join(problems)


def test_overlay_commits_no_secret_and_everything_is_in_the_namespace(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"] == [], f"{name}: Secrets are created by create-secret.sh only"
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == "ml-pipeline", f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ml-pipeline"


def test_strict_validation_rejects_an_unknown_field(kind_objects: list[dict[str, Any]]) -> None:
    """Proves the schema check is strict: a typo'd field (as kustomize would pass through) fails."""
    statefulset = copy.deepcopy(by_kind_name(kind_objects, "StatefulSet", "warehouse"))
    statefulset["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "IfNotPresent"
    assert schema_errors(statefulset) != []
    statefulset = copy.deepcopy(by_kind_name(kind_objects, "StatefulSet", "warehouse"))
    statefulset["spec"]["replicas"] = "one"
    assert schema_errors(statefulset) != []


def test_kind_warehouse_is_hardened_and_reads_its_own_secret(kind_objects: list[dict[str, Any]]) -> None:
    workloads = [o for o in kind_objects if o["kind"] in WORKLOAD_KINDS]
    assert [f"{o['kind']}/{o['metadata']['name']}" for o in workloads] == ["StatefulSet/warehouse"]
    sts = workloads[0]
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert {ref["name"] for ref in secret_refs.values()} == {"warehouse-credentials"}
    assert set(secret_refs) >= {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert {m["name"] for m in container["volumeMounts"]} >= {"data", "run", "tmp"}
    # the in-cluster warehouse is what the base NetworkPolicy lets stage pods reach
    assert sts["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "warehouse"
    service = by_kind_name(kind_objects, "Service", "warehouse")
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "warehouse"}


def test_stage_service_account_has_no_token_and_airflow_role_is_least_privilege(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    assert by_kind_name(objects, "ServiceAccount", "ml-pipeline-stage")["automountServiceAccountToken"] is False
    role = by_kind_name(objects, "Role", "airflow-pod-launcher")
    granted = {(resource, verb) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]}
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    assert {resource for resource, _ in granted} == {"pods", "pods/log", "pods/exec", "events"}
    assert not any("*" in pair for pair in granted)
    assert {verb for resource, verb in granted if resource != "pods"} <= {"get", "list", "watch", "create"}
    assert not {verb for resource, verb in granted if resource in ("pods/log", "events")} & {"create", "patch", "delete", "update"}
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    binding = by_kind_name(objects, "RoleBinding", "airflow-pod-launcher")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "airflow-pod-launcher"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "airflow-worker", "namespace": "ml-pipeline"}]


def test_stage_pods_may_reach_only_dns_and_the_warehouse(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    stage_selector = {"matchLabels": {"app.kubernetes.io/component": "stage"}}
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    assert all(p["spec"]["podSelector"] == stage_selector for p in policies)
    deny = by_kind_name(objects, "NetworkPolicy", "stage-default-deny")
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    assert not any(p["spec"].get("ingress") for p in policies), "nothing may connect to a stage pod"
    allowed_ports = {(port["protocol"], port["port"]) for p in policies for rule in p["spec"].get("egress", []) for port in rule["ports"]}
    assert allowed_ports == {("UDP", 53), ("TCP", 53), ("TCP", 5432)}
    warehouse_rule = by_kind_name(objects, "NetworkPolicy", "stage-egress-warehouse")["spec"]["egress"]
    assert len(warehouse_rule) == 1 and warehouse_rule[0]["ports"] == [{"protocol": "TCP", "port": 5432}]
    destination = warehouse_rule[0]["to"]
    if name == "kind":
        assert destination == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "warehouse"}}}]
    else:
        assert [set(d) for d in destination] == [{"ipBlock"}] and destination[0]["ipBlock"]["cidr"] != "0.0.0.0/0"


def test_limits_and_quota_are_set(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    limit = by_kind_name(objects, "LimitRange", "container-defaults")["spec"]["limits"][0]
    assert limit["type"] == "Container" and {"default", "defaultRequest", "max"} <= set(limit)
    quota = by_kind_name(objects, "ResourceQuota", "ml-pipeline-quota")["spec"]["hard"]
    assert {"pods", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"} <= set(quota)


def _stage_images(objects: list[dict[str, Any]]) -> dict[str, str]:
    data = by_kind_name(objects, "ConfigMap", "pipeline-config")["data"]
    return {stage: data[f"PIPELINE_IMAGE_{stage.upper()}"] for stage in STAGES}


def test_kind_uses_local_images_pulled_if_not_present(kind_objects: list[dict[str, Any]]) -> None:
    config = by_kind_name(kind_objects, "ConfigMap", "pipeline-config")["data"]
    assert config["PIPELINE_RUNNER"] == "kubernetes"
    assert config["PIPELINE_K8S_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert config["PIPELINE_K8S_SERVICE_ACCOUNT"] == "ml-pipeline-stage"
    assert config["PIPELINE_K8S_WAREHOUSE_SECRET"] == "warehouse-credentials"
    for stage, image in _stage_images(kind_objects).items():
        repository, tag = image.rsplit(":", 1)
        assert repository == f"ml-pipeline/{stage}" and tag not in ("", "latest")


def test_production_images_are_registry_qualified_with_the_same_tags(
    kind_objects: list[dict[str, Any]], production_objects: list[dict[str, Any]]
) -> None:
    local, remote = _stage_images(kind_objects), _stage_images(production_objects)
    for stage in STAGES:
        registry = remote[stage].split("/", 1)[0]
        assert "." in registry or ":" in registry, f"{remote[stage]} is not registry-qualified"
        assert remote[stage].endswith(f"/ml-pipeline/{stage}:{local[stage].rsplit(':', 1)[1]}")


def test_production_warehouse_is_external(production_objects: list[dict[str, Any]]) -> None:
    service = by_kind_name(production_objects, "Service", "warehouse")
    assert service["spec"]["type"] == "ExternalName" and service["spec"]["externalName"]
    assert not [o for o in production_objects if o["kind"] in WORKLOAD_KINDS]


def test_landing_claim_exists_in_both_overlays(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    assert by_kind_name(objects, "PersistentVolumeClaim", "landing-data")
    assert by_kind_name(objects, "ConfigMap", "pipeline-config")["data"]["PIPELINE_K8S_LANDING_PVC"] == "landing-data"


def test_kustomizations_use_current_fields_only() -> None:
    deprecated = {"bases", "commonLabels", "patchesStrategicMerge", "patchesJson6902", "vars", "imageTags"}
    files = sorted(K8S.glob("**/kustomization.yaml"))
    assert len(files) == 3
    for path in files:
        used = set(yaml.safe_load(path.read_text()))
        assert not used & deprecated, f"{path.relative_to(K8S)} uses {sorted(used & deprecated)}"
        assert "resources" in used


def test_kind_cluster_mounts_landing_and_publishes_the_warehouse_nodeport(kind_objects: list[dict[str, Any]]) -> None:
    cluster = yaml.safe_load((K8S / "kind" / "cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster" and cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    node = cluster["nodes"][0]
    mounts = {m["containerPath"]: m["hostPath"] for m in node["extraMounts"]}
    landing_pv = by_kind_name(kind_objects, "PersistentVolume", "ml-pipeline-landing-data")
    assert mounts[landing_pv["spec"]["hostPath"]["path"]] == ".data/landing"
    dags_pv = by_kind_name(kind_objects, "PersistentVolume", "ml-pipeline-airflow-dags")
    assert mounts[dags_pv["spec"]["hostPath"]["path"]] == "dags"
    nodeport = by_kind_name(kind_objects, "Service", "warehouse-nodeport")["spec"]["ports"][0]["nodePort"]
    (mapping,) = node["extraPortMappings"]
    assert mapping["containerPort"] == nodeport and mapping["listenAddress"] == "127.0.0.1"
    assert mapping["hostPort"] == 15432
