"""DAG parse time: `dags/ml_pipeline.py` (PIPELINE_RUNNER=kubernetes) against a minimal DAG with one
KubernetesPodOperator, each parsed through a DagBag in a fresh interpreter, interleaved, median.

Runs in the dags environment (`uv run --project dags python bench/dag_parse.py [--repeats 3]`) and
reuses the measurement of `tests/dags/test_parse.py` (network blocked, metadata DB unreachable,
Airflow's one-off setup warmed up on a trivial DAG first and not timed). Writes
{"ours_seconds", "minimal_seconds", "ratio", "repeats", "load"} to $PIPELINE_RESULT_PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "dags"))
from dag_helpers import DAG_FILE  # noqa: E402
from test_parse import MINIMAL_KPO_DAG, parse  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = round(os.getloadavg()[0], 2)
    ours: list[float] = []
    minimal: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        folder = Path(tmp)
        baseline = folder / "minimal_kpo.py"
        baseline.write_text(MINIMAL_KPO_DAG)
        for _ in range(args.repeats):
            minimal.append(parse(baseline, folder)["seconds"])
            ours.append(parse(DAG_FILE, folder, PIPELINE_RUNNER="kubernetes")["seconds"])
    result = {
        "ours_seconds": statistics.median(ours),
        "minimal_seconds": statistics.median(minimal),
        "ratio": statistics.median(ours) / statistics.median(minimal),
        "repeats": args.repeats,
        "ours_all": ours,
        "minimal_all": minimal,
        "load": load,
    }
    print(json.dumps(result))
    if os.environ.get("PIPELINE_RESULT_PATH"):
        Path(os.environ["PIPELINE_RESULT_PATH"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
