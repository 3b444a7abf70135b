"""Security policy for ml-pipeline's Kubernetes objects, checked offline on plain manifests.

One entry point, shared by the kustomize tests (tests/k8s) and the DAG's rendered-pod tests::

    violations(manifest: dict, *, token_allowed: bool = False) -> list[str]

`manifest` is one Kubernetes object as a dict in API form (camelCase keys, as YAML/JSON has them).
A `kubernetes.client` model (e.g. the `V1Pod` from `KubernetesPodOperator.build_pod_request_obj`)
is accepted too and serialised with `ApiClient().sanitize_for_serialization` first. A `List` is
checked item by item. The result is one readable line per problem; an empty list means compliant.

What is checked, on every pod spec found (Pod, PodTemplate, Deployment, StatefulSet, DaemonSet,
ReplicaSet, Job, CronJob) and every container in it (init containers included):
- runs as non-root: `runAsNonRoot: true` (container or pod level) and no `runAsUser: 0`;
- `readOnlyRootFilesystem: true`, `allowPrivilegeEscalation: false`, not privileged,
  capabilities drop `ALL` and add none;
- resources: cpu and memory both requested and limited;
- image pinned: a tag other than `latest`, or a digest;
- no literal secret in `env`: a variable whose name says password/secret/token/key, or whose value
  is a URL with a password, must come from `valueFrom.secretKeyRef` (or `envFrom.secretRef`);
- the service-account token is not mounted: `automountServiceAccountToken: false` on the pod and no
  projected token volume (pass `token_allowed=True` for a pod that really calls the API);
- no host namespaces or hostPath volumes.
And on a Secret: no committed values (`data`/`stringData` must be empty; Secrets are created from
the environment by k8s/scripts/create-secret.sh).

Pure standard library, so any test environment can import it: add the folder of this file to
`sys.path` (or load it with importlib) and call `violations`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

__all__ = ["violations"]

_SECRET_NAME = re.compile(r"PASSW(OR)?D|(^|_)PASS($|_)|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL|(^|_)KEY$", re.IGNORECASE)
_URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/:@\s]+:[^/@\s]+@", re.IGNORECASE)
_WORKLOAD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}


def violations(manifest: Any, *, token_allowed: bool = False) -> list[str]:
    """Every policy violation in one object (or List of objects); empty when it is compliant."""
    manifest = _as_dict(manifest)
    kind = manifest.get("kind", "")
    if kind.endswith("List") and "items" in manifest:
        return [problem for item in manifest.get("items") or [] for problem in violations(item, token_allowed=token_allowed)]
    label = f"{kind or 'object'}/{(manifest.get('metadata') or {}).get('name', '?')}"
    if kind == "Secret":
        return _secret_violations(manifest, label)
    problems: list[str] = []
    for where, pod_spec in _pod_specs(manifest):
        problems += [f"{label}{where}: {p}" for p in _pod_violations(pod_spec, token_allowed=token_allowed)]
    return problems


def _as_dict(manifest: Any) -> dict[str, Any]:
    if isinstance(manifest, dict):
        return manifest
    if hasattr(manifest, "openapi_types"):  # a kubernetes.client model object
        from kubernetes.client import ApiClient

        as_dict = ApiClient().sanitize_for_serialization(manifest)
        kind = re.fullmatch(r"V\d+(?:(?:alpha|beta)\d+)?([A-Z]\w*)", type(manifest).__name__)
        if "kind" not in as_dict and kind:  # models built in code often leave kind unset
            as_dict["kind"] = kind.group(1)
        return as_dict
    raise TypeError(f"expected a manifest dict or a kubernetes.client model, got {type(manifest).__name__}")


def _pod_specs(manifest: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The pod specs an object defines, with where they sit (for the message)."""
    kind = manifest.get("kind")
    spec = manifest.get("spec") or {}
    if kind == "Pod":
        yield "", spec
    elif kind == "PodTemplate":
        yield " template", (manifest.get("template") or {}).get("spec") or {}
    elif kind in _WORKLOAD_TEMPLATE_KINDS:
        yield " template", (spec.get("template") or {}).get("spec") or {}
    elif kind == "CronJob":
        yield " jobTemplate", (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}


def _secret_violations(secret: dict[str, Any], label: str) -> list[str]:
    keys = sorted({*(secret.get("data") or {}), *(secret.get("stringData") or {})})
    if keys:
        return [f"{label}: Secret with committed values ({', '.join(keys)}); create it from the environment instead"]
    return []


def _pod_violations(pod: dict[str, Any], *, token_allowed: bool) -> list[str]:
    problems: list[str] = []
    pod_sc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{field} is true")
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f"volume {volume.get('name')} is a hostPath")
    if not token_allowed:
        if pod.get("automountServiceAccountToken") is not False:
            problems.append("service-account token is mounted (set automountServiceAccountToken: false)")
        for volume in pod.get("volumes") or []:
            sources = (volume.get("projected") or {}).get("sources") or []
            if any("serviceAccountToken" in source for source in sources):
                problems.append(f"volume {volume.get('name')} projects a service-account token")
    containers = [("initContainer", c) for c in pod.get("initContainers") or []] + [("container", c) for c in pod.get("containers") or []]
    if not containers:
        problems.append("no containers")
    for role, container in containers:
        problems += [f"{role} {container.get('name', '?')}: {p}" for p in _container_violations(container, pod_sc)]
    return problems


def _container_violations(container: dict[str, Any], pod_sc: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    sc = container.get("securityContext") or {}

    def effective(field: str) -> Any:
        return sc[field] if field in sc else pod_sc.get(field)

    if effective("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if effective("runAsUser") == 0:
        problems.append("runAsUser is 0 (root)")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if sc.get("privileged"):
        problems.append("privileged is true")
    capabilities = sc.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        problems.append("capabilities do not drop ALL")
    if capabilities.get("add"):
        problems.append(f"capabilities added: {', '.join(capabilities['add'])}")
    problems += _resource_violations(container.get("resources") or {})
    problems += _image_violations(container.get("image"))
    problems += _env_violations(container)
    return problems


def _resource_violations(resources: dict[str, Any]) -> list[str]:
    problems = []
    for section in ("requests", "limits"):
        present = resources.get(section) or {}
        missing = [r for r in ("cpu", "memory") if r not in present]
        if missing:
            problems.append(f"{section} missing for {', '.join(missing)}")
    return problems


def _image_violations(image: str | None) -> list[str]:
    if not image:
        return ["no image"]
    if "@" in image:  # pinned by digest
        return []
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # the last ':' belongs to a registry port, not a tag
        return [f"image {image} has no tag (pin one)"]
    if tag == "latest":
        return [f"image {image} uses the latest tag (pin a version)"]
    return []


def _env_violations(container: dict[str, Any]) -> list[str]:
    problems = []
    for var in container.get("env") or []:
        name, value = var.get("name", ""), var.get("value")
        if not value:
            continue
        if _SECRET_NAME.search(name):
            problems.append(f"env {name} has a literal value (use valueFrom.secretKeyRef or envFrom.secretRef)")
        elif _URL_WITH_PASSWORD.match(str(value)):
            problems.append(f"env {name} holds a URL with a password (use a Secret)")
    return problems
