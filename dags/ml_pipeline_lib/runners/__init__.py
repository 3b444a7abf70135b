"""Runners: one module per execution mode (cosmos style), sharing `base.Runner`.

`get_runner()` imports only the selected module, so parsing the DAG with the local runner never
imports the docker or cncf.kubernetes providers (the latter costs seconds).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ml_pipeline_lib.config import RunnerConfig
from ml_pipeline_lib.constants import RunnerMode

if TYPE_CHECKING:
    from ml_pipeline_lib.runners.base import Runner

_MODULES = {
    RunnerMode.LOCAL: ("ml_pipeline_lib.runners.local", "LocalRunner"),
    RunnerMode.DOCKER: ("ml_pipeline_lib.runners.docker", "DockerRunner"),
    RunnerMode.KUBERNETES: ("ml_pipeline_lib.runners.kubernetes", "KubernetesRunner"),
}


def get_runner(config: RunnerConfig | None = None) -> Runner:
    """The runner for `config.mode` (default: from the environment, `PIPELINE_RUNNER`)."""
    config = config or RunnerConfig.from_env()
    module_name, class_name = _MODULES[config.mode]
    runner_class = getattr(importlib.import_module(module_name), class_name)
    return runner_class(config)
