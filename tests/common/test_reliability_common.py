"""The stage contract under side errors (issue 10): an exception in a worker thread or one ignored
in a finaliser (what a lost warehouse connection leaves while it is torn down) never reaches
stderr; the stage's one error line stays alone there."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.reliability

STAGE = textwrap.dedent(
    """
    import threading
    import typer
    from mlp_common.cli import run_app
    from mlp_common.exit_codes import ExitCode, StageError

    app = typer.Typer()

    class Connection:
        def __del__(self):
            raise RuntimeError("server closed the connection unexpectedly")

    @app.command()
    def main() -> None:
        worker = threading.Thread(target=lambda: 1 / 0, name="copy-writer")
        worker.start()
        worker.join()
        Connection()  # collected at once: its finaliser's error is "ignored"
        raise StageError("cannot reach the warehouse at db:5432", ExitCode.WAREHOUSE_UNAVAILABLE)

    run_app(app, "probe")
    """
)


def test_reliability_thread_and_finaliser_errors_stay_off_stderr(reliability) -> None:
    proc = subprocess.run([sys.executable, "-c", STAGE], capture_output=True, text=True, timeout=60)
    reliability.fault(survived=proc.stderr.strip().splitlines() == ["probe: error: cannot reach the warehouse at db:5432"])
    assert proc.returncode == 50
    assert proc.stderr.strip().splitlines() == ["probe: error: cannot reach the warehouse at db:5432"], proc.stderr
    assert "ZeroDivisionError" in proc.stdout and "server closed the connection" in proc.stdout  # logged, as JSON lines
