"""Fault injection shared by the reliability tests of every stage: kill a stage process, restart
the warehouse under it. Standard library plus mlp_common: importable from each stage's environment."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from mlp_common.embedded import start_embedded, stop_embedded
from mlp_common.exit_codes import ExitCode


def kill_after(proc: subprocess.Popen, seconds: float) -> bool:  # type: ignore[type-arg]
    """SIGKILL `proc` after `seconds` unless it ended first; True when it was killed. Waits for it."""
    time.sleep(seconds)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    return killed


def restart_warehouse_under(proc: subprocess.Popen, root: Path) -> tuple[int, str]:  # type: ignore[type-arg]
    """Restart the private embedded warehouse in `root` (a fast shutdown terminates every session, as
    a failover or a restart does) while `proc` runs; return its exit code and stderr."""
    stop_embedded(root)
    start_embedded(root)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err or ""


def failed_cleanly_and_retryably(code: int, stderr: str) -> bool:
    """The stage contract for a lost warehouse: exit 50 (the DAG retries it) and one stderr line."""
    return code == ExitCode.WAREHOUSE_UNAVAILABLE and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
