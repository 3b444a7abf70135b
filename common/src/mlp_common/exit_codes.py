"""Exit codes of every stage CLI, in one place so that they never collide.

The DAG reads `ExitCode.retryable` to decide whether a failed task is worth a retry:
infrastructure trouble (unexpected errors, warehouse unreachable) is retried with backoff,
bad input and failed quality gates fail at once, because a retry would fail the same way.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1
    USAGE = 2  # click/typer's own code for a bad command line
    # ingest: bad input or configuration
    SOURCE_MISSING = 10
    FILE_UNREADABLE = 11
    UNKNOWN_TABLE = 12
    EMPTY_FILE = 13
    HEADER_MISMATCH = 14
    BAD_ARGUMENT = 15
    LANDING_UNWRITABLE = 16  # ingest generate: the landing folder is full or read-only
    # data quality gates (dbt tests, drift that must stop a run)
    DATA_QUALITY = 20
    TRANSFORM_ERROR = 21  # dbt: a model or test failed to compile or run (project bug or bad var), not the data
    # trainer
    EMPTY_TRAINING_SET = 30
    SINGLE_CLASS = 31
    MISSING_FEATURES = 32
    ALL_NULL_FEATURE = 33
    BELOW_FLOOR_NO_CHAMPION = 34
    # predictor and registry
    NO_CHAMPION = 40
    UNKNOWN_MODEL_VERSION = 41
    EMPTY_SNAPSHOT = 42
    SCHEMA_MISMATCH = 43
    ARTIFACT_INTEGRITY = 44
    # infrastructure
    WAREHOUSE_UNAVAILABLE = 50

    @property
    def retryable(self) -> bool:
        """True when a retry may succeed: the failure was not caused by the data or the arguments."""
        return self in (ExitCode.UNEXPECTED, ExitCode.WAREHOUSE_UNAVAILABLE)


NON_RETRYABLE_CODES: frozenset[int] = frozenset(int(c) for c in ExitCode if c != ExitCode.OK and not c.retryable)


class StageError(Exception):
    """An error a user can act on: printed as one line on stderr, then the process exits with `code`."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code
