"""Shared by the image tests: the Docker CLI, the stage images under test, and when to skip.

A test that needs the engine or a built image skips with the reason on a developer machine, but
FAILS in CI (`CI=true`): there `.ci/run` starts dockerd and runs `make images` first, so a
missing engine or image is a broken pipeline, not a machine without Docker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES_MK = REPO / "images" / "images.mk"
STAGE_CLIS = {"ingest": "ingest", "dbt": "dbt-stage", "trainer": "trainer", "predictor": "predictor"}
STAGE_UID = 10001
IMAGE_REPO = os.environ.get("IMAGE_REPO", "ml-pipeline")
IMAGE_VERSION = os.environ.get("IMAGE_VERSION", "0.1.0")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip here, fail in CI (where the engine and the images are part of the run)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the images must be built and tested)")
    pytest.skip(reason)


def docker_cli() -> str | None:
    """`$DOCKER`, else `docker` from PATH (any client works for run/inspect/history)."""
    return os.environ.get("DOCKER") or shutil.which("docker")


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    cli = docker_cli()
    assert cli, "no docker CLI"
    proc = subprocess.run([cli, *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"docker {' '.join(args)}: exit {proc.returncode}: {proc.stderr[-2000:]}"
    return proc


@cache
def engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if not docker_cli():
        return "no docker CLI on PATH"
    proc = subprocess.run([docker_cli() or "docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return f"no Docker engine reachable ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'docker info failed'})"
    return None


def require_engine() -> None:
    problem = engine_problem()
    if problem:
        skip_or_fail(problem)


def image_ref(stage: str) -> str:
    return f"{IMAGE_REPO}/{stage}:{IMAGE_VERSION}"


def require_image(stage: str) -> dict[str, Any]:
    """The image's `docker image inspect` record; skip (fail in CI) when it is not built."""
    require_engine()
    proc = docker("image", "inspect", image_ref(stage), check=False)
    if proc.returncode != 0:
        skip_or_fail(f"image {image_ref(stage)} is not built: run `make images`")
    return json.loads(proc.stdout)[0]


def size_limits() -> dict[str, int]:
    """`IMAGE_SIZE_LIMIT_<stage> := MB` from images/images.mk: the targets `make images` reports and the tests assert."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^IMAGE_SIZE_LIMIT_(\w+) := (\d+)", IMAGES_MK.read_text(), re.M)}


def built_stages() -> list[str]:
    """The stages whose project is in this checkout (the others are merged later)."""
    return [s for s in STAGE_CLIS if (REPO / s / "pyproject.toml").is_file()]
