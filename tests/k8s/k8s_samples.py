"""Sample manifests shared by the tests in this folder."""

from __future__ import annotations

from typing import Any


def stage_pod() -> dict[str, Any]:
    """A pod as the DAG's kubernetes runner should render one: compliant in every respect."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ingest-load", "labels": {"app.kubernetes.io/component": "stage"}},
        "spec": {
            "serviceAccountName": "ml-pipeline-stage",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
            "volumes": [{"name": "tmp", "emptyDir": {}}],
            "containers": [
                {
                    "name": "base",
                    "image": "ml-pipeline/ingest:0.1.0",
                    "args": ["ingest", "load", "--ds", "2024-03-01"],
                    "envFrom": [{"secretRef": {"name": "warehouse-credentials"}}],
                    "env": [
                        {"name": "PIPELINE_LANDING_DIR", "value": "/data/landing"},
                        {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "warehouse-credentials", "key": "PGPASSWORD"}}},
                    ],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
        },
    }
