"""Run a stage's typer app with the stage contract's error handling.

Bad input or configuration ends in one line on stderr and a distinct exit code (see
`exit_codes`), never a traceback wall; `PIPELINE_DEBUG=1` adds the traceback for developers.
"""

from __future__ import annotations

import atexit
import contextlib
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
    try:
        _run(app, stage, args)
    except SystemExit as exc:
        _exit_without_teardown(exc.code)


def _exit_without_teardown(code: object) -> NoReturn:
    """Leave as a normal exit does, minus the interpreter's finalisation, which frees every object
    one by one: 0.4-0.5 s after a dbt build (its parsed project is ~180 k objects), paid by every
    layer of every run for nothing, since the process ends anyway. Non-daemon threads are joined
    and the exit handlers run first (log files flushed and closed, temporary folders removed), as
    Python itself does before finalising."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        status = 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing left to deliver
            stream.flush()
    os._exit(status)


def _run(app: typer.Typer, stage: str, args: list[str] | None) -> NoReturn:
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
