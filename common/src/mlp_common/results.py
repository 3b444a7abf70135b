"""The stage result: a small JSON object that becomes the task's XCom.

KubernetesPodOperator reads `/airflow/xcom/return.json`; the local and docker runners point
`PIPELINE_RESULT_PATH` elsewhere. Large data never goes here: it lives in the warehouse.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlp_common.logs import get_logger

KPO_RESULT_PATH = Path("/airflow/xcom/return.json")


def result_path() -> Path | None:
    """Where the result goes: `$PIPELINE_RESULT_PATH`, else the KPO path when its folder exists."""
    configured = os.environ.get("PIPELINE_RESULT_PATH")
    if configured:
        return Path(configured)
    if KPO_RESULT_PATH.parent.is_dir():
        return KPO_RESULT_PATH
    return None


def write_result(result: dict[str, Any]) -> Path | None:
    """Write the result atomically (a reader never sees half a file) and log it."""
    get_logger("result").info("result", extra={"fields": {"result": result}})
    path = result_path()
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, default=str, sort_keys=True))
    tmp.replace(path)
    return path
