"""What every runner shares: the operator contract (timing XCom, exit-code policy) and the Runner API.

A runner turns a `StageSpec` into an operator whose command line is exactly `spec.argv(...)`.
Each operator class mixes in `StageOperatorMixin`, which
- times the stage and pushes `{started_at, ended_at, seconds, exit_code}` under the XCom key
  `stage_timing` (the run record collects them; task instances are not readable from a task);
- turns a stage exit code listed in `mlp_common.exit_codes.NON_RETRYABLE_CODES` into
  `AirflowFailException`, which Airflow never retries; any other failure is retried with the
  stage's exponential backoff.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from ml_pipeline_lib.config import RunnerConfig
from ml_pipeline_lib.constants import ENV_RUN_ID, TIMING_XCOM_KEY
from ml_pipeline_lib.stages import StageSpec


class StageFailed(AirflowException):
    """The stage process ended with a non-zero exit code (known to the runner)."""

    def __init__(self, message: str, exit_code: int | None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def is_retryable(exit_code: int | None) -> bool:
    """Unknown codes (None: the launcher failed) and infrastructure codes are worth a retry."""
    from mlp_common.exit_codes import NON_RETRYABLE_CODES

    return exit_code is None or exit_code not in NON_RETRYABLE_CODES


def exit_code_of(exc: BaseException | None) -> int | None:
    """The stage exit code carried by an exception or its causes, if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code = getattr(exc, "exit_code", None)
        if isinstance(code, int):
            return code
        exc = exc.__cause__ or exc.__context__
    return None


class StageOperatorMixin:
    """Mixed in before the launcher's operator class; subclasses implement `_launch` or inherit execute."""

    stage_name: str = ""

    def _launch(self, context: Any) -> Any:
        return super().execute(context)  # type: ignore[misc]

    def execute(self, context: Any) -> Any:
        started = time.time()
        exit_code: int | None = 0
        try:
            return self._launch(context)
        except StageFailed as exc:
            exit_code = exc.exit_code
            if not is_retryable(exc.exit_code):
                raise AirflowFailException(f"{exc} (exit code {exc.exit_code} is not retryable: failing without retry)") from exc
            raise
        except Exception:
            exit_code = None
            raise
        finally:
            ended = time.time()
            timing = {
                "stage": self.stage_name,
                "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
                "ended_at": datetime.fromtimestamp(ended, UTC).isoformat(),
                "seconds": round(ended - started, 3),
                "exit_code": exit_code,
            }
            ti = context.get("ti") if hasattr(context, "get") else None
            if ti is not None:
                ti.xcom_push(key=TIMING_XCOM_KEY, value=timing)


class Runner(ABC):
    """Builds operators for stage specs; one subclass per execution mode."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config

    @property
    def mode(self) -> str:
        return self.config.mode.value

    @abstractmethod
    def operator_class(self) -> Any:
        """The operator class this runner instantiates (accepts `argv=`)."""

    @abstractmethod
    def operator_kwargs(self, spec: StageSpec) -> dict[str, Any]:
        """Launcher-specific keyword arguments for `spec` (everything except argv and task_id)."""

    def stage_env(self, spec: StageSpec) -> dict[str, str]:
        """Environment every runner gives a stage (Jinja rendered by Airflow): spec env + run id."""
        return {**spec.env, ENV_RUN_ID: "{{ run_id }}"}

    def common_kwargs(self, spec: StageSpec) -> dict[str, Any]:
        return {**spec.retry.operator_kwargs(), "stage_name": spec.name}

    def operator(self, spec: StageSpec, *, task_id: str | None = None, **overrides: Any) -> Any:
        """One task running `spec.argv()` (Jinja-templated: `{{ ds }}` etc.)."""
        kwargs = {**self.common_kwargs(spec), **self.operator_kwargs(spec), **overrides}
        return self.operator_class()(task_id=task_id or spec.name, argv=spec.argv(), **kwargs)

    def mapped_operator(self, spec: StageSpec, argvs: Any, *, task_id: str | None = None, **overrides: Any) -> Any:
        """One mapped task per command line in `argvs` (an XComArg of concrete argv lists)."""
        kwargs = {**self.common_kwargs(spec), **self.operator_kwargs(spec), **overrides}
        return self.operator_class().partial(task_id=task_id or spec.name, **kwargs).expand(argv=argvs)

    @staticmethod
    @abstractmethod
    def effective_argv(operator: Any) -> list[str]:
        """The command line an operator of this runner will execute (after rendering)."""
