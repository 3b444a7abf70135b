"""Run dbt in-process (dbtRunner) and turn its outcome into the stage contract: a result dict with
counts and the invocation id, and an exit code that says who must act (the data, the project, or
the infrastructure)."""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbt_stage.paths import profiles_dir, project_dir, target_dir
from mlp_common.exit_codes import ExitCode
from mlp_common.logs import get_logger

log = get_logger("dbt_stage")

# dbt wraps psycopg2's connection failures in its own messages; these are the libpq phrasings.
_CONNECTION_TROUBLE = re.compile(
    r"could not connect|connection refused|could not translate host name|timeout expired|server closed the connection"
    r"|connection to server .* failed|FailedToConnect|terminating connection",
    re.IGNORECASE,
)


@dataclass
class DbtOutcome:
    """What one dbt invocation did, reduced to what the pipeline needs."""

    command: str
    success: bool
    invocation_id: str | None
    elapsed_seconds: float
    execution_seconds: float | None = None
    models: dict[str, int] = field(default_factory=dict)
    tests: dict[str, int] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    exit_code: ExitCode = ExitCode.OK

    def as_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "command": self.command,
            "success": self.success,
            "invocation_id": self.invocation_id,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "execution_seconds": None if self.execution_seconds is None else round(self.execution_seconds, 3),
            "exit_code": int(self.exit_code),
        }
        if self.models:
            result["models"] = self.models
        if self.tests:
            result["tests"] = self.tests
        if self.sources:
            result["sources"] = self.sources
        if self.failures:
            result["failures"] = self.failures
        if self.warnings:
            result["warnings"] = self.warnings
        if self.error:
            result["error"] = self.error
        return result


def _base_args(project: Path) -> list[str]:
    args = ["--project-dir", str(project), "--profiles-dir", str(profiles_dir(project))]
    return args


def _global_args() -> list[str]:
    """Structured log lines on stdout unless the caller chose a format (DBT_LOG_FORMAT)."""
    return [] if os.environ.get("DBT_LOG_FORMAT") else ["--log-format", "json"]


def _invocation_id(project: Path, started: float) -> str | None:
    """The id dbt wrote in this invocation's run_results.json (or sources.json); dbt's own as fallback."""
    for name in ("run_results.json", "sources.json"):
        path = target_dir(project) / name
        if path.is_file() and path.stat().st_mtime >= started - 1:
            try:
                return json.loads(path.read_text())["metadata"]["invocation_id"]
            except (OSError, ValueError, KeyError):
                continue
    from dbt_common.invocation import get_invocation_id

    return get_invocation_id()


def _one_line(text: str, limit: int = 400) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _classify_exception(exc: BaseException) -> ExitCode:
    text = f"{type(exc).__name__}: {exc}"
    return ExitCode.WAREHOUSE_UNAVAILABLE if _CONNECTION_TROUBLE.search(text) else ExitCode.TRANSFORM_ERROR


_SCHEMA_DRIFT = re.compile(
    r"Source columns not in target: (?P<added>\[.*?\])\s+Target columns not in source: (?P<removed>\[.*?\])"
    r"(?:\s+New column types: (?P<retyped>\[.*?\]))?",
    re.DOTALL,
)
_COLUMN_NAME = re.compile(r"(?:column='|'column_name': '|'name': ')([^']+)'")


def _error_message(message: str) -> str:
    """A node's error in one line; an incremental model's schema change (on_schema_change='fail') as
    the columns that changed and what to do, instead of dbt's paragraph that hides them at its end."""
    drift = _SCHEMA_DRIFT.search(message) if "out of sync" in message else None
    if drift is None:
        return _one_line(message, 240)
    parts = []
    for label, key in (("new in the model", "added"), ("no longer in the model", "removed"), ("retyped", "retyped")):
        names = _COLUMN_NAME.findall(drift.group(key) or "")
        if names:
            parts.append(f"{label} {', '.join(names)}")
    changed = "; ".join(parts) or _one_line(drift.group(0), 200)
    return f"the model's columns no longer match its table (on_schema_change='fail'): {changed}; rebuild it with --full-refresh"


def _summarise_nodes(outcome: DbtOutcome, results: list[Any]) -> None:
    models: Counter[str] = Counter()
    tests: Counter[str] = Counter()
    messages: list[str] = []
    for node_result in results:
        node = node_result.node
        status = str(node_result.status)
        kind = str(getattr(node, "resource_type", ""))
        name = getattr(node, "name", "?")
        if kind == "test":
            tests[status] += 1
        elif kind in ("model", "seed", "snapshot"):
            models[status] += 1
        if status in ("fail", "error"):
            message = str(node_result.message or "")
            # an error says why (a missing column, a schema change of an incremental model); a failed test says which test
            outcome.failures.append(f"{kind} {name}: {status}" + (f": {_error_message(message)}" if status == "error" and message else ""))
            messages.append(message)
        elif status == "warn":
            outcome.warnings.append(f"{kind} {name}")
    outcome.models = dict(models)
    outcome.tests = dict(tests)
    model_errors = models.get("error", 0)
    test_errors = tests.get("error", 0)
    if any(_CONNECTION_TROUBLE.search(m) for m in messages):
        outcome.exit_code = ExitCode.WAREHOUSE_UNAVAILABLE
    elif model_errors or test_errors:
        outcome.exit_code = ExitCode.TRANSFORM_ERROR
    elif tests.get("fail", 0):
        outcome.exit_code = ExitCode.DATA_QUALITY


def _summarise_freshness(outcome: DbtOutcome, results: list[Any]) -> None:
    for source_result in results:
        node = source_result.node
        status = str(source_result.status)
        outcome.sources[f"{node.source_name}.{node.name}"] = {
            "status": status,
            "max_loaded_at": str(getattr(source_result, "max_loaded_at", None)),
            "age_seconds": round(float(getattr(source_result, "age", 0) or 0), 1),
        }
        if status == "error":
            outcome.failures.append(f"source {node.source_name}.{node.name}: stale")
            if outcome.exit_code == ExitCode.OK:
                outcome.exit_code = ExitCode.DATA_QUALITY
        elif status == "runtime error":
            outcome.failures.append(f"source {node.source_name}.{node.name}: {_one_line(getattr(source_result, 'message', '') or '')}")
            outcome.exit_code = ExitCode.TRANSFORM_ERROR
        elif status == "warn":
            outcome.warnings.append(f"source {node.source_name}.{node.name}")


def invoke(command: list[str], *, project: Path | None = None) -> DbtOutcome:
    """Run `dbt <command>` for the project and summarise it. Never raises for dbt's own failures."""
    from dbt.cli.main import dbtRunner

    project = project or project_dir()
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    args = [*_global_args(), *command, *_base_args(project)]
    label = " ".join(command[:2]) if command[:1] == ["source"] else command[0]
    log.info("dbt start", extra={"fields": {"dbt_args": args}})
    started_wall, started = time.time(), time.monotonic()
    res = dbtRunner().invoke(args)
    outcome = DbtOutcome(
        command=label,
        success=bool(res.success),
        invocation_id=_invocation_id(project, started_wall),
        elapsed_seconds=time.monotonic() - started,
    )
    elapsed_time = getattr(res.result, "elapsed_time", None)
    outcome.execution_seconds = float(elapsed_time) if elapsed_time is not None else None
    results = getattr(res.result, "results", None)
    if res.exception is not None:
        outcome.error = _one_line(f"{type(res.exception).__name__}: {res.exception}")
        outcome.exit_code = _classify_exception(res.exception)
    elif results is not None and label == "source freshness":
        _summarise_freshness(outcome, list(results))
    elif results is not None:
        _summarise_nodes(outcome, list(results))
    if not res.success and outcome.exit_code == ExitCode.OK:
        outcome.exit_code = ExitCode.TRANSFORM_ERROR
        outcome.error = outcome.error or "dbt reported failure"
    log.info("dbt done", extra={"fields": outcome.as_result()})
    return outcome
