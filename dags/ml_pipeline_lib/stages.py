"""Every stage of the pipeline, described once: image, command line, environment, resources, retries.

A runner (runners/local.py, docker.py, kubernetes.py) turns a `StageSpec` into an Airflow
operator; only the launcher differs, never the command line. Command-line templates use
`{name}` placeholders, filled by `StageSpec.argv()` with Jinja expressions that Airflow renders
at run time (`{ds}` -> `{{ ds }}`), or with concrete values (the prediction shards).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from ml_pipeline_lib.constants import CONTAINER_SCRATCH_DIR


class StageSpecError(ValueError):
    """A stage description is inconsistent (raised at parse time, shown as the DAG's import error)."""


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests and limits (also the Docker memory limit)."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def requests(self) -> dict[str, str]:
        return {"cpu": self.cpu_request, "memory": self.memory_request}

    def limits(self) -> dict[str, str]:
        return {"cpu": self.cpu_limit, "memory": self.memory_limit}


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for infrastructure errors; exponential backoff, capped.

    Non-retryable stage exit codes (`mlp_common.exit_codes.NON_RETRYABLE_CODES`) bypass this:
    every runner fails them at once with `AirflowFailException`.
    """

    retries: int = 2
    delay: timedelta = timedelta(seconds=30)
    backoff: float = 2.0
    max_delay: timedelta = timedelta(minutes=10)
    timeout: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 1 or self.delay > self.max_delay:
            raise StageSpecError(f"inconsistent retry policy {self}: retries >= 0, backoff >= 1, delay <= max_delay")

    def operator_kwargs(self) -> dict[str, object]:
        return {
            "retries": self.retries,
            "retry_delay": self.delay,
            "retry_exponential_backoff": self.backoff,
            "max_retry_delay": self.max_delay,
            "execution_timeout": self.timeout,
        }


# What each `{placeholder}` becomes when Airflow renders the task (the run's own values).
JINJA_VALUES: Mapping[str, str] = MappingProxyType(
    {
        "ds": "{{ ds }}",
        "run_id": "{{ run_id }}",
        "cadence_days": "{{ params.retrain_cadence_days }}",
        "auc_floor": "{{ params.auc_floor }}",
        "tolerance": "{{ params.promotion_tolerance }}",
        "stages_json": "{{ ti.xcom_pull(task_ids='collect_stage_results') }}",
    }
)


@dataclass(frozen=True)
class StageSpec:
    """One stage: what runs (argv in an image / a uv project), with what, and how it is retried."""

    name: str
    image: str  # image name without repository and tag (the runner pins both)
    project: str  # the stage's uv project folder at the repository root (local runner)
    argv_template: tuple[str, ...]
    resources: Resources
    env: Mapping[str, str] = field(default_factory=dict)  # rendered by Airflow (Jinja allowed)
    local_env: Mapping[str, str] = field(default_factory=dict)  # local runner only; `{repo}` = repository root
    container_env: Mapping[str, str] = field(default_factory=dict)  # docker/kubernetes only (read-only root fs)
    needs_landing: bool = False
    needs_reports: bool = False
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise StageSpecError(f"stage name {self.name!r} must be a valid task id (letters, digits, underscores)")
        if not self.argv_template or "{" in self.argv_template[0]:
            raise StageSpecError(f"stage {self.name}: argv must start with a fixed executable name")
        unknown = self.placeholders() - set(JINJA_VALUES) - {"shard"}
        if unknown:
            raise StageSpecError(f"stage {self.name}: unknown placeholders {sorted(unknown)} in its argv")

    def placeholders(self) -> set[str]:
        return {f for part in self.argv_template for _, f, _, _ in string.Formatter().parse(part) if f}

    def argv(self, **values: str) -> list[str]:
        """The command line; unspecified placeholders become the Jinja expressions Airflow renders."""
        filled = {**JINJA_VALUES, **values}
        missing = self.placeholders() - set(filled)
        if missing:
            raise StageSpecError(f"stage {self.name}: no value for {sorted(missing)}")
        return [part.format(**filled) for part in self.argv_template]


# Requests sized for the demo data; limits leave headroom for a larger day.
SMALL_RESOURCES = Resources("100m", "128Mi", "500m", "256Mi")
DBT_RESOURCES = Resources("250m", "512Mi", "1", "1Gi")
LOAD_RESOURCES = Resources("250m", "512Mi", "1", "2Gi")
TRAIN_RESOURCES = Resources("500m", "1Gi", "2", "4Gi")
SCORE_RESOURCES = Resources("250m", "512Mi", "1", "2Gi")

DBT_LOCAL_ENV = {"DBT_PROJECT_DIR": "{repo}/dbt", "DBT_PROFILES_DIR": "{repo}/dbt"}
# dbt writes target/ and logs/ into its project folder by default: in an image the root
# filesystem is read-only, so both go to the scratch volume.
DBT_CONTAINER_ENV = {"DBT_TARGET_PATH": f"{CONTAINER_SCRATCH_DIR}/dbt-target", "DBT_LOG_PATH": f"{CONTAINER_SCRATCH_DIR}/dbt-logs"}


def _dbt(name: str, *argv: str) -> StageSpec:
    return StageSpec(
        name=name,
        image="dbt",
        project="dbt",
        argv_template=("dbt-stage", *argv),
        resources=DBT_RESOURCES,
        local_env=DBT_LOCAL_ENV,
        container_env=DBT_CONTAINER_ENV,
    )


FRESHNESS = _dbt("freshness", "freshness", "--ds", "{ds}")
INGEST = StageSpec(
    name="ingest",
    image="ingest",
    project="ingest",
    argv_template=("ingest", "load", "--ds", "{ds}"),
    resources=LOAD_RESOURCES,
    needs_landing=True,
)
DBT_STAGING = _dbt("dbt_staging", "build", "--layer", "staging", "--ds", "{ds}")
DBT_INTERMEDIATE = _dbt("dbt_intermediate", "build", "--layer", "intermediate", "--ds", "{ds}")
DBT_MARTS = _dbt("dbt_marts", "build", "--layer", "marts", "--ds", "{ds}")
RETRAIN_DUE = StageSpec(
    name="retrain_due",
    image="trainer",
    project="trainer",
    argv_template=("trainer", "due", "--ds", "{ds}", "--cadence-days", "{cadence_days}"),
    resources=SMALL_RESOURCES,
)
TRAIN = StageSpec(
    name="train",
    image="trainer",
    project="trainer",
    argv_template=("trainer", "train", "--ds", "{ds}", "--auc-floor", "{auc_floor}", "--tolerance", "{tolerance}"),
    resources=TRAIN_RESOURCES,
    needs_reports=True,
    retry=RetryPolicy(timeout=timedelta(hours=2)),
)
PREDICT = StageSpec(
    name="predict",
    image="predictor",
    project="predictor",
    argv_template=("predictor", "predict", "--ds", "{ds}", "--shard", "{shard}"),
    resources=SCORE_RESOURCES,
)
# The run record runs in the predictor image: it has mlp-common, which provides `run-record`.
RUN_RECORD = StageSpec(
    name="run_record",
    image="predictor",
    project="predictor",
    argv_template=("run-record", "--ds", "{ds}", "--run-id", "{run_id}", "--stages-json", "{stages_json}"),
    resources=SMALL_RESOURCES,
)

STAGES: Mapping[str, StageSpec] = MappingProxyType(
    {s.name: s for s in (FRESHNESS, INGEST, DBT_STAGING, DBT_INTERMEDIATE, DBT_MARTS, RETRAIN_DUE, TRAIN, PREDICT, RUN_RECORD)}
)
# The stages whose results and timings the run record collects, in pipeline order.
RECORDED_STAGES = tuple(name for name in STAGES if name != RUN_RECORD.name)


def shard_label(index: int, count: int) -> str:
    """The `--shard` value of one prediction shard: `I/N`, 0-based."""
    if count < 1 or not 0 <= index < count:
        raise StageSpecError(f"shard {index} of {count}: need 0 <= index < count and count >= 1")
    return f"{index}/{count}"


def scoring_version(due_result: Any, train_result: Any) -> int | None:
    """The model version every shard of this run scores with: when `trainer due` sent the run to
    training, the champion training left (`champion_after`); otherwise the champion `trainer due` saw.

    Pinned once per run, so a promotion while the shards run (another run of the same date, a person
    promoting by hand) cannot make one run's shards disagree. None when the results name no version
    (the predictor then uses the champion, and says so if there is none).
    """
    due = isinstance(due_result, dict) and due_result.get("due") is True
    result, key = (train_result, "champion_after") if due else (due_result, "champion_version")
    version = result.get(key) if isinstance(result, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def shard_argvs(ds: str, count: int, model_version: int | None) -> list[list[str]]:
    """One predictor command line per shard, all pinned to `model_version` (the champion when None)."""
    pin = ["--model-version", str(model_version)] if model_version is not None else []
    return [PREDICT.argv(ds=ds, shard=shard_label(i, count)) + pin for i in range(count)]
