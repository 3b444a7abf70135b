"""Settings of one training run, validated up front so that a bad argument fails before any work.

Modelling knobs live here as named constants (not CLI options): the DAG passes only the date, the
AUC floor and the tolerance, and a change of modelling policy is a code change with a code version.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.registry import DEFAULT_MODEL

TRAINING_SCHEMA = "marts"
TRAINING_TABLE = "customer_churn_training_set"
# Feature discovery rule shared with the predictor: every column except these and names starting with "_".
REQUIRED_COLUMNS = ("cutoff_date", "customer_id", "label_window_end", "churned")
MISSING_CATEGORY = "__missing__"  # what a NULL categorical becomes, in training and in the ONNX input
ONNX_OUTPUT = "probabilities"

# Baseline: a one-feature model on recency, the classic churn heuristic. First numeric feature matching.
BASELINE_FEATURE_CANDIDATES = ("recency_days", "days_since_last_transaction", "recency")

# Class imbalance: below this minority share, classes are reweighted ("balanced"). Above it the plain
# log-loss fit is kept, because reweighting distorts the probabilities the predictor writes back.
IMBALANCE_THRESHOLD = 0.2

# HistGradientBoosting settings: sized so that 1M rows fit in well under a minute on 2 cores.
HGB_PARAMS: dict[str, object] = {
    "learning_rate": 0.1,
    "max_iter": 200,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "validation_fraction": 0.1,
    "n_iter_no_change": 10,
}

# Evaluation sizes: bounded so that evaluation cost stays small next to the fit at any data size.
PERMUTATION_SAMPLE = 20_000
PERMUTATION_REPEATS = 3
SCORE_REFERENCE_SAMPLE = 200_000
CALIBRATION_BINS = 10
# ONNX must reproduce sklearn's probabilities on the holdout within this absolute difference.
ONNX_TOLERANCE = 1e-4


def reports_root() -> Path:
    """`$PIPELINE_REPORTS_DIR`, else `reports/` in the working directory."""
    return Path(os.environ.get("PIPELINE_REPORTS_DIR") or "reports").resolve()


def code_version() -> str:
    """The image tag (`PIPELINE_CODE_VERSION`), else the git revision of this checkout, else "unknown"."""
    configured = os.environ.get("PIPELINE_CODE_VERSION")
    if configured:
        return configured
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    revision = result.stdout.strip()
    return revision if result.returncode == 0 and revision else "unknown"


@dataclass(frozen=True)
class TrainConfig:
    """One `trainer train` invocation."""

    ds: date
    auc_floor: float
    tolerance: float
    seed: int = 42
    holdout_cutoffs: int = 1
    model_name: str = DEFAULT_MODEL
    reports_dir: Path = field(default_factory=reports_root)

    def __post_init__(self) -> None:
        if not 0.0 <= self.auc_floor <= 1.0:
            raise StageError(f"--auc-floor must be between 0 and 1, got {self.auc_floor}", ExitCode.BAD_ARGUMENT)
        if not 0.0 <= self.tolerance < 1.0:
            raise StageError(f"--tolerance must be in [0, 1), got {self.tolerance}", ExitCode.BAD_ARGUMENT)
        if self.holdout_cutoffs < 1:
            raise StageError(f"holdout_cutoffs must be at least 1, got {self.holdout_cutoffs}", ExitCode.BAD_ARGUMENT)
        if self.seed < 0:
            raise StageError(f"--seed must be non-negative, got {self.seed}", ExitCode.BAD_ARGUMENT)
