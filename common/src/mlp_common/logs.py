"""Structured logging for stage processes: one JSON object per line on stdout.

Every line carries the stage, the logical date (`ds`) and the Airflow run id when known, so that
logs from pods, containers and local subprocesses can be searched the same way.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

_context: dict[str, Any] = {"stage": None, "ds": None, "run_id": os.environ.get("PIPELINE_RUN_ID")}
_configured = False


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            **{k: v for k, v in _context.items() if v is not None},
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            line.update(extra)
        return json.dumps(line, default=str)


def set_context(**fields: Any) -> None:
    """Attach fields (stage, ds, run_id, ...) to every following log line of this process."""
    _context.update(fields)


def get_logger(name: str) -> logging.Logger:
    """The project's one logger factory: JSON lines to stdout, configured on first use."""
    global _configured
    if not _configured:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_JsonFormatter())
        root = logging.getLogger("mlp")
        root.addHandler(handler)
        root.setLevel(os.environ.get("PIPELINE_LOG_LEVEL", "INFO").upper())
        root.propagate = False
        # psycopg logs what it ignores while cleaning up a lost connection ("error ignored in
        # rollback ..."); unhandled, Python prints those on stderr, around the stage's one error line
        driver = logging.getLogger("psycopg")
        driver.addHandler(handler)
        driver.propagate = False
        _configured = True
    return logging.getLogger(f"mlp.{name}")
