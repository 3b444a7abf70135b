"""Docker runner: each stage in a container of its own pinned image (`DockerOperator`).

- The command line is the image's entrypoint override plus arguments: `argv[0]` / `argv[1:]`,
  exactly as the Kubernetes runner sets a pod's `command` / `args`.
- libpq variables come from the worker's environment at run time, through `private_environment`
  (never rendered into the UI or the serialized DAG). A PGHOST that means "this machine"
  (localhost, 127.0.0.1, a unix socket folder) becomes `host.docker.internal`, which
  `extra_hosts` maps to the host gateway.
- The landing folder is mounted read-only, the reports folder read-write.
- The result JSON is written by the stage to `/tmp/pipeline-result.json` and copied out of the
  stopped container (`retrieve_output`), decoded as JSON (not pickle).
- Exit codes: the container is kept after it stops (`auto_remove="never"`), inspected for its
  exit code on failure, then removed; non-retryable codes fail at once.
"""

from __future__ import annotations

import json
import os
from typing import Any

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from docker.types import Mount

from ml_pipeline_lib.constants import (
    CONTAINER_LANDING_DIR,
    CONTAINER_REPORTS_DIR,
    CONTAINER_RESULT_PATH,
    ENV_LANDING_DIR,
    ENV_REPORTS_DIR,
    ENV_RESULT_PATH,
    LIBPQ_VARIABLES,
)
from ml_pipeline_lib.runners.base import Runner, StageFailed, StageOperatorMixin
from ml_pipeline_lib.stages import StageSpec

_LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


def container_libpq_env(environ: dict[str, str], docker_pghost: str) -> dict[str, str]:
    """The worker's libpq variables, with a host-local PGHOST rewritten for the container."""
    env = {k: environ[k] for k in LIBPQ_VARIABLES if environ.get(k)}
    host = env.get("PGHOST", "")
    if host in _LOCAL_HOSTS or host.startswith("/"):
        env["PGHOST"] = docker_pghost
    return env


class DockerStageOperator(StageOperatorMixin, DockerOperator):
    """`DockerOperator` running one stage command line; result JSON as XCom; exit-code aware."""

    ui_color = "#e5eef8"

    def __init__(self, *, argv: list[str], stage_name: str = "", docker_pghost: str = "host.docker.internal", **kwargs: Any) -> None:
        argv = list(argv)
        super().__init__(entrypoint=argv[:1], command=argv[1:], **kwargs)
        self.stage_name = stage_name or self.task_id
        self.docker_pghost = docker_pghost
        # Decode the retrieved result as JSON: nothing from a container is ever unpickled.
        self.pickling_library = json

    def _launch(self, context: Any) -> Any:
        self._private_environment = {
            **self._private_environment,  # type: ignore[has-type]
            **container_libpq_env(dict(os.environ), self.docker_pghost),
        }
        try:
            return DockerOperator.execute(self, context)
        except DockerContainerFailedException as exc:
            raise StageFailed(f"stage {self.stage_name}: {exc}", self._container_exit_code()) from exc
        finally:
            self._remove_container()

    def _container_exit_code(self) -> int | None:
        try:
            return int(self.cli.inspect_container(self.container["Id"])["State"]["ExitCode"])
        except Exception:  # noqa: BLE001 - unknown code: treated as retryable
            return None

    def _remove_container(self) -> None:
        container = getattr(self, "container", None)
        if container:
            try:
                self.cli.remove_container(container["Id"], force=True)
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the stage's outcome
                self.log.warning("could not remove container %s: %s", container["Id"], exc)


class DockerRunner(Runner):
    """Containers on the worker's Docker engine; images `<repo>/<image>:<tag>`."""

    def operator_class(self) -> type:
        return DockerStageOperator

    def operator_kwargs(self, spec: StageSpec) -> dict[str, Any]:
        env = {**self.stage_env(spec), **spec.container_env, ENV_RESULT_PATH: CONTAINER_RESULT_PATH, "HOME": "/tmp"}
        mounts = []
        if spec.needs_landing:
            env[ENV_LANDING_DIR] = CONTAINER_LANDING_DIR
            mounts.append(Mount(target=CONTAINER_LANDING_DIR, source=str(self.config.landing_dir), type="bind", read_only=True))
        if spec.needs_reports:
            env[ENV_REPORTS_DIR] = CONTAINER_REPORTS_DIR
            mounts.append(Mount(target=CONTAINER_REPORTS_DIR, source=str(self.config.reports_dir), type="bind", read_only=False))
        return {
            "image": self.config.image(spec.image),
            "environment": env,
            "mounts": mounts,
            "extra_hosts": {"host.docker.internal": "host-gateway"},
            "docker_url": self.config.docker_url,
            "docker_pghost": self.config.docker_pghost,
            "mem_limit": _docker_memory(spec.resources.memory_limit),
            "mount_tmp_dir": False,
            "auto_remove": "never",
            "force_pull": False,
            "retrieve_output": True,
            "retrieve_output_path": CONTAINER_RESULT_PATH,
            "do_xcom_push": True,
        }

    @staticmethod
    def effective_argv(operator: Any) -> list[str]:
        return [*operator.entrypoint, *operator.command]


def _docker_memory(quantity: str) -> str:
    """Kubernetes memory quantity (`512Mi`, `2Gi`) -> Docker's (`512m`, `2g`)."""
    for suffix, docker_suffix in (("Gi", "g"), ("Mi", "m"), ("Ki", "k")):
        if quantity.endswith(suffix):
            return quantity[: -len(suffix)] + docker_suffix
    return quantity
