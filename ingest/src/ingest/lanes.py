"""COPY lanes: one connection's COPY statements, sent by a thread of its own.

A history load parses its files on the main thread and hands every payload to a lane, which keeps
one COPY open while the target table and column order stay the same. The server's COPY work, not
the parsing, bounds a history load (one backend, one core); a second lane on a second connection
puts the other core to work. Each lane's queue is a few payloads deep: the parser blocks instead of
buffering a whole month ahead, so memory stays flat however big the load. Small payloads (a day of
customers is a few KB) are joined before they are queued: each hand-over to the lane's thread
costs thread wake-ups and GIL hand-offs, which cost more than a small payload's COPY.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

from ingest.contract import RAW_SCHEMA

# Payloads queued per lane: enough to keep its server busy while the parser serves the other lane.
LANE_DEPTH = 8
# Payloads smaller than this are joined with the next ones for the same COPY before being queued.
JOIN_BELOW = 64 << 10


def copy_sql(target: str, columns: list[str] | tuple[str, ...], *, freeze: bool = False) -> sql.Composed:
    """`COPY raw.<target> (columns) FROM STDIN (FORMAT csv)`. `freeze` (only for a table this
    transaction created or truncated, which nobody else can read before it commits): the rows go in
    frozen and their pages marked all-visible, so the first reader does not rewrite every page to
    set hint bits (with data checksums, each also a full-page image in the WAL), and vacuum never
    has to freeze them later."""
    options = "format csv, freeze" if freeze else "format csv"
    return sql.SQL("copy {} ({}) from stdin with ({})").format(
        sql.Identifier(RAW_SCHEMA, target), sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(options)
    )


class _Abort(Exception):
    """Raised inside the lane's open COPY to fail it (the load failed elsewhere)."""


class CopyLane:
    """Sends `(target, columns, payload)` items on `conn` from a worker thread, in order.

    While the lane is open the connection belongs to its thread: the caller must not use it until
    `close()` returns. An error the thread hits (the server refusing a row) is raised by the next
    `send()` or by `close()`.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        name: str,
        frozen: set[str],
        setup: Callable[[], None] | None = None,
        finish: Callable[[], None] | None = None,
    ) -> None:
        """`setup` and `finish` run on the lane's thread, before anything is sent and after the last
        COPY ended (not when aborted): the caller goes on meanwhile."""
        self.conn = conn
        self.frozen = frozen  # targets this transaction created or truncated: COPY FREEZE
        self.setup = setup
        self.finish = finish
        self._queue: queue.Queue[tuple[str, tuple[str, ...], bytes] | None] = queue.Queue(maxsize=LANE_DEPTH)
        self._error: BaseException | None = None
        self._aborting = False
        self._small: list[bytes] = []  # small payloads not queued yet, all for `_small_for`
        self._small_bytes = 0
        self._small_for: tuple[str, tuple[str, ...]] = ("", ())
        self._thread = threading.Thread(target=self._run, name=f"copy-lane-{name}", daemon=True)
        self._thread.start()

    def send(self, target: str, columns: tuple[str, ...], payload: bytes) -> None:
        if self._error is not None:
            raise self._error
        if (target, columns) != self._small_for:
            self._queue_small()
            self._small_for = (target, columns)
        if not self._small and len(payload) >= JOIN_BELOW:
            self._queue.put((target, columns, payload))
            return
        self._small.append(payload)
        self._small_bytes += len(payload)
        if self._small_bytes >= JOIN_BELOW:
            self._queue_small()

    def _queue_small(self) -> None:
        if self._small:
            self._queue.put((*self._small_for, b"".join(self._small)))
            self._small, self._small_bytes = [], 0

    def close(self, *, abort: bool = False) -> None:
        """Wait for the queued payloads and the end of the last COPY (`abort`: fail the open COPY
        instead, and raise nothing); raise what the lane hit."""
        self._aborting = abort
        if not abort:
            self._queue_small()
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and not abort:
            raise self._error

    def _run(self) -> None:
        done = False  # the closing None was taken
        try:
            if self.setup is not None:
                self.setup()
            with contextlib.ExitStack() as open_copy:
                copy = None
                current: tuple[str, tuple[str, ...]] = ("", ())
                while (item := self._queue.get()) is not None:
                    target, columns, payload = item
                    if copy is None or (target, columns) != current:
                        open_copy.close()  # ends the previous COPY
                        cursor = open_copy.enter_context(self.conn.cursor())
                        copy = open_copy.enter_context(cursor.copy(copy_sql(target, columns, freeze=target in self.frozen)))
                        current = (target, columns)
                    copy.write(payload)
                done = True
                if self._aborting:
                    raise _Abort("the load failed")
            if self.finish is not None:
                self.finish()
        except BaseException as exc:  # noqa: BLE001 - the thread's end: the caller raises it
            self._error = exc
            while not done and self._queue.get() is not None:  # keep `send()` from blocking until the caller sees the error
                pass
