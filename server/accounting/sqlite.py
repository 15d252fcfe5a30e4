"""`SqliteUsageStore`: usage in the state file, committed by one thread of the server's own.

Writing a row is a put on the writer thread's queue; the thread commits what it finds there in one
transaction (the row, or its second write, and the totals' change), so the event loop never waits
on the disk or on another process's lock. The caller may wait for the commit (`record` returns the
wait): the ledger waits before a request leaves and after it ends, so a request that was sent is on
file, whatever is killed, unless another process held the file locked longer than the caller waits.

Totals are read on the event loop (WAL: a read never waits for writers; on the rare busy file, in a
thread), and they include this process's writes still queued: the thread records in each commit the
number of the last write it committed (`writers.seq`), read in the same snapshot as the totals, so a
budget check counts every write exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import queue
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

import anyio

from swarm_inference_mcp.server.accounting.ledger import (
    COLUMNS,
    StateError,
    Totals,
    UsageRow,
    change,
    measures,
    rows_in,
)
from swarm_inference_mcp.server.accounting.schema import BUSY_TIMEOUT_MS, connect, reason

log = logging.getLogger(__name__)

WARN_EVERY_S = 60.0
"""Rows that wait past their patience are said in the log at most this often, not once a row."""
MAX_UNWRITTEN = 10_000
"""With no budget reading the totals, how many queued writes are remembered before asking which are committed."""
_INSERT = f"INSERT INTO calls (day, {', '.join(COLUMNS)}) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"  # noqa: S608
_SETTLE = (
    "UPDATE calls SET model = ?, outcome = ?, status = ?, attempts = ?, prompt_tokens = ?, completion_tokens = ?,"
    " total_tokens = ?, latency_ms = ? WHERE ref = ?"
)
_ADD = "calls = calls + excluded.calls, errors = errors + excluded.errors, prompt_tokens = prompt_tokens + \
excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens, total_tokens = \
total_tokens + excluded.total_tokens"
_TOTALS = f"INSERT INTO totals VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (period, provider) DO UPDATE SET {_ADD}"  # noqa: S608
_CLIENTS = f"INSERT INTO client_totals VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, client) DO UPDATE SET {_ADD}"  # noqa: S608

_COLUMNS_OF = operator.attrgetter(*COLUMNS)
"""A row's values in `COLUMNS` order."""
Write = tuple[int, UsageRow, UsageRow | None]
"""A queued write: its number, the row, and the row's earlier write (when this one settles it)."""


class SqliteUsageStore:
    """The shared state file. `open` it (raises `StateError`), `close` it when done (blocking: off the loop)."""

    counts_lifetime = False

    def __init__(self, path: Path, db: sqlite3.Connection, *, patience_s: float = BUSY_TIMEOUT_MS / 1000) -> None:
        self.path = path
        self.problem: str | None = None
        self._patience_s = patience_s
        """The longest a write's caller waits for its commit (another process keeping the file locked)."""
        self._stalled = False
        """A wait ran out of patience and nothing was committed since: the next writes do not wait."""
        self._warned_at = -WARN_EVERY_S
        self._db = db
        db.execute("PRAGMA busy_timeout = 0")  # reads on the loop never wait; a busy one goes to a thread
        self._reader: sqlite3.Connection | None = None
        """Opened on first need, for reads that met a busy file, used by one worker thread at a time."""
        self._one_thread = anyio.CapacityLimiter(1)
        self._id = secrets.token_hex(8)
        self._seq = 0
        self._unwritten: deque[Write] = deque()
        """Writes queued for the thread that it may not have committed yet, oldest first."""
        self._queue: queue.SimpleQueue[Write | None] = queue.SimpleQueue()
        self._waiting: deque[tuple[int, anyio.Event]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._write_all, name="usage-writer", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, path: Path, *, patience_s: float = BUSY_TIMEOUT_MS / 1000) -> SqliteUsageStore:
        return cls(path, connect(path), patience_s=patience_s)

    @property
    def backlog(self) -> int:
        return rows_in(row for _, row, _ in self._unwritten)

    def record(self, row: UsageRow, previous: UsageRow | None = None) -> Awaitable[None] | None:
        """Queue the write; the returned wait ends once the thread committed it (or failed), or after
        `patience_s`. While the file stays locked past that, later writes return at once."""
        if self.problem is not None:
            return None
        self._seq += 1
        self._unwritten.append((self._seq, row, previous))
        self._queue.put((self._seq, row, previous))
        if len(self._unwritten) > MAX_UNWRITTEN:
            self._forget_committed(self._committed_seq(self._db))
        try:
            self._loop = asyncio.get_running_loop()  # the thread tells this loop what it committed
        except RuntimeError:
            return None
        if self._stalled:
            return None
        done = anyio.Event()
        self._waiting.append((self._seq, done))
        return self._until(done)

    async def _until(self, done: anyio.Event) -> None:
        with anyio.move_on_after(self._patience_s) as waited:
            await done.wait()
        if not waited.cancelled_caught:
            return
        self._stalled = True
        if time.monotonic() - self._warned_at >= WARN_EVERY_S:
            self._warned_at = time.monotonic()
            log.warning(
                "usage state file %s: rows wait longer than %g s to be committed (another process keeps it locked, "
                "or the server is very busy); calls go on meanwhile and the rows follow",
                self.path,
                self._patience_s,
            )

    def _write_all(self) -> None:
        """The writer thread: commit whatever is queued, in one transaction, until `close` says stop."""
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            db.execute("PRAGMA synchronous = NORMAL")  # durable across a killed process; fsync at checkpoints
            db.execute("INSERT OR REPLACE INTO writers (id, seq, at) VALUES (?, 0, ?)", (self._id, time.time()))
            while (first := self._queue.get()) is not None:
                batch = [first]
                with contextlib.suppress(queue.Empty):
                    while (more := self._queue.get_nowait()) is not None:
                        batch.append(more)
                    self._queue.put(None)  # seen mid-batch: stop after committing this batch
                _commit(db, self._id, batch)
                self._tell(batch[-1][0])
            db.execute("DELETE FROM writers WHERE id = ?", (self._id,))
        except sqlite3.Error as exc:
            self.problem = f"the usage state file {self.path} cannot be written ({reason(exc)})"
            log.error("%s; usage is kept in memory from now on.", self.problem)
        finally:
            if db is not None:
                db.close()
            self._tell(float("inf"))

    def _tell(self, committed: float) -> None:
        """Wake the calls waiting for writes up to `committed` (on their loop; it may be gone at shutdown)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._release, committed)

    def _release(self, committed: float) -> None:
        self._stalled = False
        while self._waiting and self._waiting[0][0] <= committed:
            self._waiting.popleft()[1].set()

    async def totals(self, periods: Iterable[str]) -> dict[tuple[str, str], Totals]:
        wanted = list(periods)
        columns = "period, provider, calls, errors, prompt_tokens, completion_tokens, total_tokens"
        marks = ",".join("?" * len(wanted))
        query = f"SELECT {columns} FROM totals WHERE period IN ({marks})"  # noqa: S608 - only placeholders go in
        rows = await self._read(query, wanted)
        found = {(period, provider): Totals(*numbers) for period, provider, *numbers in rows}
        for _, row, previous in self._unwritten:
            for period in row.periods:
                if period in wanted:
                    found.setdefault((period, row.provider), Totals()).add(change(row, previous))
        return found

    async def client_totals(self, day: str) -> dict[str, Totals]:
        columns = "client, calls, errors, prompt_tokens, completion_tokens, total_tokens"
        rows = await self._read(f"SELECT {columns} FROM client_totals WHERE day = ?", [day])  # noqa: S608
        found = {client: Totals(*numbers) for client, *numbers in rows}
        for _, row, previous in self._unwritten:
            if row.client is not None and row.periods[0] == day:
                found.setdefault(row.client, Totals()).add(change(row, previous, for_client=True))
        return found

    async def _read(self, query: str, params: list[str]) -> list[tuple[Any, ...]]:
        """Rows of `query` and, in the same snapshot, which of our writes are committed (then forgotten
        here). On the loop (WAL: a read does not wait for writers), or in a thread on the rare busy file."""
        try:
            try:
                rows, committed = self._snapshot(self._db, query, params)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                rows, committed = await anyio.to_thread.run_sync(
                    self._snapshot, self._reader_db(), query, params, limiter=self._one_thread
                )
        except sqlite3.Error as exc:
            raise StateError(f"the usage state file {self.path} cannot be read ({reason(exc)})") from None
        self._forget_committed(committed)
        return rows

    def _snapshot(self, db: sqlite3.Connection, query: str, params: list[str]) -> tuple[list[tuple[Any, ...]], int]:
        db.execute("BEGIN")
        try:
            rows: list[tuple[Any, ...]] = db.execute(query, params).fetchall()
            return rows, self._committed_seq(db)
        finally:
            db.execute("COMMIT")

    def _committed_seq(self, db: sqlite3.Connection) -> int:
        found = db.execute("SELECT seq FROM writers WHERE id = ?", (self._id,)).fetchone()
        return int(found[0]) if found else 0

    def _forget_committed(self, committed: int) -> None:
        while self._unwritten and self._unwritten[0][0] <= committed:
            self._unwritten.popleft()

    def _reader_db(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        return self._reader

    def close(self) -> None:
        """Commit what is queued and stop the thread (blocking: call it off the loop)."""
        self._queue.put(None)
        self._thread.join(timeout=BUSY_TIMEOUT_MS / 1000 * 3)
        if self._thread.is_alive():
            log.warning(
                "the usage state file %s was locked too long; %d rows were not written", self.path, self.backlog
            )
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
            if self._reader is not None:
                self._reader.close()


def _commit(db: sqlite3.Connection, writer_id: str, batch: list[Write]) -> None:
    """One transaction: each write and its change to the totals, and the number of the last one."""
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for _, row, previous in batch:
                    _write(db, row, previous)
                db.execute("UPDATE writers SET seq = ?, at = ? WHERE id = ?", (batch[-1][0], time.time(), writer_id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            log.warning("the usage state file is locked by another process; retrying (%s)", exc)


def _write(db: sqlite3.Connection, row: UsageRow, previous: UsageRow | None) -> None:
    day, month = row.periods
    if previous is None:
        db.execute(_INSERT, (day, *_COLUMNS_OF(row)))
    else:
        db.execute(
            _SETTLE,
            (
                row.model, row.outcome, row.status, row.attempts, row.prompt_tokens, row.completion_tokens,
                row.total_tokens, row.latency_ms, row.ref,
            ),
        )  # fmt: skip
    measured = measures(change(row, previous))
    db.execute(_TOTALS, (day, row.provider, *measured))
    db.execute(_TOTALS, (month, row.provider, *measured))
    if row.client is not None:
        db.execute(_CLIENTS, (day, row.client, *measures(change(row, previous, for_client=True))))
