"""Run a stage's typer app with the stage contract's error handling.

Bad input or configuration ends in one line on stderr and a distinct exit code (see
`exit_codes`), never a traceback wall; `PIPELINE_DEBUG=1` adds the traceback for developers.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import NoReturn

import psycopg
import typer

from mlp_common.exit_codes import ExitCode, StageError
from mlp_common.logs import get_logger, set_context


def fail(stage: str, message: str, code: int) -> NoReturn:
    """Print the one error line, log it structurally, and exit with `code`."""
    one_line = " ".join(message.split())
    get_logger(stage).error(one_line, extra={"fields": {"exit_code": int(code)}})
    print(f"{stage}: error: {one_line}", file=sys.stderr)
    if os.environ.get("PIPELINE_DEBUG") == "1" and sys.exc_info()[0] is not None:
        traceback.print_exc()
    sys.exit(int(code))


def _quiet_side_errors(stage: str) -> None:
    """Errors Python would print on stderr outside the main flow (an exception in a worker thread,
    one ignored in a finaliser while a lost connection is torn down) become JSON log lines on
    stdout: stderr keeps the stage's one error line, never a stray traceback."""
    log = get_logger(stage)

    def thread_error(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread else "?"
        log.warning("error in thread %s: %s: %s", name, args.exc_type.__name__, args.exc_value)

    def ignored_error(unraisable: sys.UnraisableHookArgs) -> None:
        log.warning("error ignored in %r: %s: %s", unraisable.object, unraisable.exc_type.__name__, unraisable.exc_value)

    threading.excepthook = thread_error
    sys.unraisablehook = ignored_error


def run_app(app: typer.Typer, stage: str, args: list[str] | None = None) -> NoReturn:
    """Entry point of every stage CLI: `if __name__ == "__main__": run_app(app, "ingest")`."""
    set_context(stage=stage)
    _quiet_side_errors(stage)  # also configures logging first: driver warnings become JSON lines on stdout
    try:
        returned = app(args=args, standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: the parser's own message, exit code 2
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"{stage}: error: {exc}", file=sys.stderr)
        sys.exit(int(getattr(exc, "exit_code", ExitCode.USAGE)))
    except typer.Abort:
        fail(stage, "aborted", ExitCode.UNEXPECTED)
    except StageError as exc:
        fail(stage, str(exc), exc.code)
    except psycopg.OperationalError as exc:
        fail(stage, f"warehouse connection failed: {str(exc).strip() or type(exc).__name__}", ExitCode.WAREHOUSE_UNAVAILABLE)
    except Exception as exc:  # noqa: BLE001 - the contract: one line, never a traceback wall
        fail(stage, f"unexpected {type(exc).__name__}: {exc}", ExitCode.UNEXPECTED)
    sys.exit(returned if isinstance(returned, int) else 0)
