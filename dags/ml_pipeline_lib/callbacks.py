"""Failure callback: one structured log event per failed task, and a webhook POST when configured.

`PIPELINE_ALERT_WEBHOOK` (read when the callback runs, not at parse time) is any URL accepting a
JSON POST (Slack-compatible `text` field included). Standard library only; a webhook that is
down is logged and never turns into a second failure.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from typing import Any

from ml_pipeline_lib.constants import ENV_ALERT_WEBHOOK
from ml_pipeline_lib.runners.base import exit_code_of, is_retryable

log = logging.getLogger("ml_pipeline.alerts")
WEBHOOK_TIMEOUT_SECONDS = 5


def failure_event(context: Any) -> dict[str, Any]:
    """The event describing a failed task, from the Airflow task context."""
    ti = context.get("ti") or context.get("task_instance")
    exception = context.get("exception")
    exit_code = exit_code_of(exception)
    task_id = getattr(ti, "task_id", None)
    event = {
        "event": "ml_pipeline.task_failed",
        "dag_id": getattr(ti, "dag_id", None),
        "run_id": context.get("run_id") or getattr(ti, "run_id", None),
        "task_id": task_id,
        "map_index": getattr(ti, "map_index", -1),
        "try_number": getattr(ti, "try_number", None),
        "logical_date": str(context.get("logical_date")) if context.get("logical_date") else None,
        "exit_code": exit_code,
        "retryable": is_retryable(exit_code),
        "error": " ".join(str(exception).split())[:500] if exception else None,
    }
    event["text"] = f"ml-pipeline: task {task_id} failed in run {event['run_id']}" + (
        f" (exit code {exit_code})" if exit_code is not None else ""
    )
    return event


def post_webhook(url: str, event: dict[str, Any]) -> int | None:
    """POST the event as JSON; return the HTTP status, or None when the webhook could not be reached."""
    request = urllib.request.Request(
        url, data=json.dumps(event, default=str).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            return int(response.status)
    except Exception as exc:  # noqa: BLE001 - alerting must not fail the callback
        log.warning("alert webhook %s failed: %s", url, exc)
        return None


def on_task_failure(context: Any) -> None:
    """Airflow `on_failure_callback`: log the event as one JSON line, then POST it if configured."""
    event = failure_event(context)
    log.error("%s", json.dumps(event, default=str, sort_keys=True))
    url = os.environ.get(ENV_ALERT_WEBHOOK)
    if url:
        post_webhook(url, event)
