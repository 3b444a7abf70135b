"""Runner settings from the environment, as one small typed dataclass validated on creation.

Read at parse time (cheap: environment only, no I/O); a bad value raises `PipelineConfigError`
with a message a user can act on, which Airflow shows as the DAG's import error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ml_pipeline_lib import constants as c

DEFAULT_IMAGE_REPO = "ml-pipeline"
DEFAULT_IMAGE_TAG = "0.1.0"  # the project version; CI and releases set PIPELINE_IMAGE_TAG
DEFAULT_NAMESPACE = "ml-pipeline"
DEFAULT_SERVICE_ACCOUNT = "ml-pipeline-stage"  # k8s/: mounts no token, may not call the API
DEFAULT_LANDING_PVC = "landing-data"  # k8s/: the ReadWriteMany claim holding the landing files
STAGE_IMAGES = ("dbt", "ingest", "trainer", "predictor")


class PipelineConfigError(ValueError):
    """A runner setting is wrong; the message says which variable and what to do."""


# dags/ml_pipeline_lib/config.py -> the repository root (the demo's layout)
DEFAULT_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunnerConfig:
    """Everything a runner needs besides the stage spec."""

    mode: c.RunnerMode = c.DEFAULT_RUNNER
    repo_root: Path = DEFAULT_REPO_ROOT
    landing_dir: Path | None = None
    reports_dir: Path | None = None
    image_repo: str = DEFAULT_IMAGE_REPO
    image_tag: str = DEFAULT_IMAGE_TAG
    namespace: str = DEFAULT_NAMESPACE
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    warehouse_secret: str = c.WAREHOUSE_SECRET
    landing_pvc: str = DEFAULT_LANDING_PVC
    reports_pvc: str | None = None  # unset: reports go to the pod's scratch volume
    image_pull_policy: str = "IfNotPresent"
    image_overrides: Mapping[str, str] = field(default_factory=dict)  # image name -> full pinned reference
    docker_url: str = "unix://var/run/docker.sock"
    docker_pghost: str = "host.docker.internal"

    def __post_init__(self) -> None:
        if self.image_tag in ("", "latest"):
            raise PipelineConfigError(
                f"{c.ENV_IMAGE_TAG}={self.image_tag!r}: stage images must be pinned; set it to a version tag (e.g. {DEFAULT_IMAGE_TAG})"
            )
        if ":" in self.image_repo.rsplit("/", 1)[-1] or "@" in self.image_repo:
            raise PipelineConfigError(
                f"{c.ENV_IMAGE_REPO}={self.image_repo!r}: give the repository only; the tag comes from {c.ENV_IMAGE_TAG}"
            )
        for name, reference in self.image_overrides.items():
            if not _is_pinned(reference):
                raise PipelineConfigError(
                    f"{c.ENV_IMAGE_OVERRIDE_PREFIX}{name.upper()}={reference!r}: pin the image with a version tag or a digest, never latest"
                )
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise PipelineConfigError(f"{c.ENV_K8S_IMAGE_PULL_POLICY}={self.image_pull_policy!r}: choose Always, IfNotPresent or Never")
        if not self.repo_root.is_absolute():
            raise PipelineConfigError(f"{c.ENV_REPO_ROOT}={self.repo_root}: must be an absolute path")
        # Defaults relative to the repository (the demo's layout); frozen, hence object.__setattr__.
        if self.landing_dir is None:
            object.__setattr__(self, "landing_dir", self.repo_root / ".data" / "landing")
        if self.reports_dir is None:
            object.__setattr__(self, "reports_dir", self.repo_root / "reports")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RunnerConfig:
        env = os.environ if environ is None else environ
        raw_mode = env.get(c.ENV_RUNNER, c.DEFAULT_RUNNER.value).strip().lower()
        try:
            mode = c.RunnerMode(raw_mode)
        except ValueError:
            choices = "|".join(m.value for m in c.RunnerMode)
            raise PipelineConfigError(f"{c.ENV_RUNNER}={raw_mode!r}: choose one of {choices}") from None

        def path(name: str) -> Path | None:
            value = env.get(name)
            return Path(value).expanduser().resolve() if value else None

        return cls(
            mode=mode,
            repo_root=path(c.ENV_REPO_ROOT) or DEFAULT_REPO_ROOT,
            landing_dir=path(c.ENV_LANDING_DIR),
            reports_dir=path(c.ENV_REPORTS_DIR),
            image_repo=env.get(c.ENV_IMAGE_REPO, DEFAULT_IMAGE_REPO),
            image_tag=env.get(c.ENV_IMAGE_TAG, DEFAULT_IMAGE_TAG),
            namespace=env.get(c.ENV_K8S_NAMESPACE, DEFAULT_NAMESPACE),
            service_account=env.get(c.ENV_K8S_SERVICE_ACCOUNT, DEFAULT_SERVICE_ACCOUNT),
            warehouse_secret=env.get(c.ENV_K8S_WAREHOUSE_SECRET, c.WAREHOUSE_SECRET),
            landing_pvc=env.get(c.ENV_K8S_LANDING_PVC, DEFAULT_LANDING_PVC),
            reports_pvc=env.get(c.ENV_K8S_REPORTS_PVC) or None,
            image_pull_policy=env.get(c.ENV_K8S_IMAGE_PULL_POLICY, "IfNotPresent"),
            image_overrides={
                name: env[f"{c.ENV_IMAGE_OVERRIDE_PREFIX}{name.upper()}"]
                for name in STAGE_IMAGES
                if env.get(f"{c.ENV_IMAGE_OVERRIDE_PREFIX}{name.upper()}")
            },
            docker_url=env.get(c.ENV_DOCKER_URL, "unix://var/run/docker.sock"),
            docker_pghost=env.get(c.ENV_DOCKER_PGHOST, "host.docker.internal"),
        )

    def image(self, name: str) -> str:
        """The pinned image of a stage: `PIPELINE_IMAGE_<NAME>` if set, else `<repo>/<name>:<tag>`."""
        return self.image_overrides.get(name) or f"{self.image_repo}/{name}:{self.image_tag}"


def _is_pinned(reference: str) -> bool:
    """A digest, or a tag other than `latest` after the last path segment's colon."""
    if "@sha256:" in reference:
        return True
    last = reference.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1] not in ("", "latest")
