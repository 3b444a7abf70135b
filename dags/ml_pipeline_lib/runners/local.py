"""Local runner: the stage's command line as a subprocess in the stage's own uv environment.

`uv run --project <repo>/<stage project> -- <argv>`: every stage keeps its own virtualenv (as it
keeps its own image), and the command line is the one the images run. The libpq variables pass
through from the worker's environment; `PIPELINE_RESULT_PATH` points at a temporary file whose
JSON becomes the task's XCom (the KubernetesPodOperator convention, relocated).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from ml_pipeline_lib.constants import ENV_LANDING_DIR, ENV_REPORTS_DIR, ENV_RESULT_PATH
from ml_pipeline_lib.runners.base import Runner, StageFailed, StageOperatorMixin
from ml_pipeline_lib.stages import StageSpec

# Variables of the worker that must not leak into a stage's environment: uv would otherwise
# warn about (or use) the Airflow virtualenv instead of the stage's own.
_DROPPED = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT")


class LocalStageOperator(StageOperatorMixin, BaseOperator):
    """Runs one stage command line with `uv run` in the stage's project; streams its output to the task log."""

    template_fields = ("argv", "env")
    ui_color = "#e8f4ea"

    def __init__(
        self, *, argv: list[str], project_dir: str, env: dict[str, str] | None = None, stage_name: str = "", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.argv = list(argv)
        self.project_dir = project_dir
        self.env = dict(env or {})
        self.stage_name = stage_name or self.task_id
        self._process: subprocess.Popen[str] | None = None

    def command(self) -> list[str]:
        uv = os.environ.get("UV") or shutil.which("uv")
        if not uv:
            raise AirflowFailException("the local runner needs `uv` on PATH (or $UV): https://docs.astral.sh/uv/")
        return [uv, "run", "--quiet", "--frozen", "--project", self.project_dir, "--", *self.argv]

    def _launch(self, context: Any) -> Any:
        if not (Path(self.project_dir) / "pyproject.toml").is_file():
            raise AirflowFailException(f"stage project {self.project_dir} has no pyproject.toml (is {self.stage_name} checked out?)")
        with tempfile.TemporaryDirectory(prefix=f"mlp-{self.stage_name}-") as tmp:
            result_file = Path(tmp) / "result.json"
            env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
            env.update(self.env)
            env[ENV_RESULT_PATH] = str(result_file)
            self.log.info("running %s", " ".join(self.argv))
            tail: deque[str] = deque(maxlen=20)
            self._process = subprocess.Popen(
                self.command(), env=env, cwd=self.project_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
            )
            assert self._process.stdout is not None
            for line in self._process.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                self.log.info("%s", line)
            code = self._process.wait()
            if code != 0:
                last = next((t for t in reversed(tail) if t.strip() and not t.lstrip().startswith("{")), tail[-1] if tail else "")
                raise StageFailed(f"stage {self.stage_name} exited with code {code}: {last.strip()}", code)
            if not result_file.is_file():
                return None
            return json.loads(result_file.read_text())

    def on_kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()


class LocalRunner(Runner):
    """Subprocesses on this machine; the warehouse is whatever the PG* variables point at."""

    def operator_class(self) -> type:
        return LocalStageOperator

    def operator_kwargs(self, spec: StageSpec) -> dict[str, Any]:
        repo = str(self.config.repo_root)
        env = self.stage_env(spec)
        env.update({k: v.format(repo=repo) for k, v in spec.local_env.items()})
        if spec.needs_landing:
            env[ENV_LANDING_DIR] = str(self.config.landing_dir)
        if spec.needs_reports:
            env[ENV_REPORTS_DIR] = str(self.config.reports_dir)
        return {"project_dir": str(self.config.repo_root / spec.project), "env": env}

    @staticmethod
    def effective_argv(operator: Any) -> list[str]:
        return list(operator.argv)
