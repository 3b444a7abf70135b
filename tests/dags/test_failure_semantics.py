"""Failure semantics (issue 6, point 4): what a failed stage does to its task, and who hears about it.

- A unit test of the callback against a real HTTP server on 127.0.0.1.
- A real `dag.test()` run (subprocess, own sqlite metadata DB) of tests/dags/dagfiles/exit_codes_dag.py:
  three local-runner tasks whose "stage" is `python -c "sys.exit(CODE)"` in the dags uv project
  (the real stage CLIs are not needed to prove how exit codes map onto retries). Exit 20
  (DATA_QUALITY) must fail on the first try, exit 1 (UNEXPECTED) must use all its retries, and
  every failure must reach the webhook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest
from dag_helpers import DAGS_DIR, REPO_ROOT, TEST_DAGS_DIR

from ml_pipeline_lib.callbacks import failure_event, on_task_failure, post_webhook
from ml_pipeline_lib.runners.base import StageFailed
from mlp_common.exit_codes import ExitCode


class Webhook:
    """A real HTTP server on 127.0.0.1 recording every JSON body POSTed to it."""

    def __init__(self, status: int = 200) -> None:
        received: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"content_type": self.headers["Content-Type"], **json.loads(body)})
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with Webhook() as hook:
        yield hook


def failed_context(exit_code: int) -> dict:
    """The parts of Airflow's task context the callback reads, for a stage that exited with `exit_code`."""
    try:
        try:
            raise StageFailed(f"stage ingest exited with code {exit_code}", exit_code)
        except StageFailed as cause:
            raise RuntimeError("wrapped by the runner") from cause
    except RuntimeError as exc:
        error = exc
    ti = SimpleNamespace(dag_id="ml_pipeline", task_id="ingest", run_id="scheduled__2024-03-01", map_index=-1, try_number=1)
    return {"ti": ti, "exception": error, "run_id": ti.run_id, "logical_date": "2024-03-01T00:00:00+00:00"}


def test_callback_posts_a_structured_event_to_the_webhook(webhook: Webhook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK", webhook.url)
    on_task_failure(failed_context(int(ExitCode.HEADER_MISMATCH)))
    [event] = webhook.received
    assert event["content_type"] == "application/json"
    assert event["event"] == "ml_pipeline.task_failed"
    assert (event["dag_id"], event["task_id"], event["run_id"]) == ("ml_pipeline", "ingest", "scheduled__2024-03-01")
    assert event["exit_code"] == 14 and event["retryable"] is False
    assert "exit code 14" in event["text"]


def test_no_webhook_configured_means_log_only(webhook: Webhook, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("PIPELINE_ALERT_WEBHOOK", raising=False)
    on_task_failure(failed_context(1))
    assert webhook.received == []
    logged = json.loads(caplog.records[-1].getMessage())
    assert logged["exit_code"] == 1 and logged["retryable"] is True


def test_an_unreachable_or_failing_webhook_never_raises() -> None:
    event = failure_event(failed_context(20))
    with Webhook(status=500) as failing:
        assert post_webhook(failing.url, event) is None
        assert len(failing.received) == 1
    assert post_webhook(failing.url, event) is None  # server gone: connection refused


@pytest.mark.slow
def test_non_retryable_exit_code_fails_at_once_and_infrastructure_errors_retry(webhook: Webhook, airflow_db: dict, tmp_path) -> None:
    env = {
        **os.environ,
        **airflow_db,
        "AIRFLOW__CORE__DAGS_FOLDER": str(TEST_DAGS_DIR),
        "PYTHONPATH": str(DAGS_DIR),
        "PIPELINE_REPO_ROOT": str(REPO_ROOT),
        "PIPELINE_ALERT_WEBHOOK": webhook.url,
    }
    proc = subprocess.run(
        [sys.executable, str(TEST_DAGS_DIR / "exit_codes_dag.py")], env=env, capture_output=True, text=True, timeout=480, cwd=tmp_path
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads(lines[-1].removeprefix("RESULT "))
    tasks = run["tasks"]
    assert run["state"] == "failed"
    assert tasks["ok"] == {**tasks["ok"], "state": "success", "try_number": 1, "result": {"code": 0}}
    assert (tasks["bad_input"]["state"], tasks["bad_input"]["try_number"]) == ("failed", 1)
    assert (tasks["flaky"]["state"], tasks["flaky"]["try_number"]) == ("failed", 3)  # 1 + 2 retries
    # the callback runs once per task failure that ends the task: here, one event per failed task
    by_task = {e["task_id"]: e for e in webhook.received}
    assert set(by_task) == {"bad_input", "flaky"}
    assert by_task["bad_input"]["exit_code"] == 20 and by_task["bad_input"]["retryable"] is False
    assert by_task["flaky"]["exit_code"] == 1 and by_task["flaky"]["try_number"] == 3
