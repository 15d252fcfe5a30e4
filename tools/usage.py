"""Usage that outlives the process: one row per upstream request, and totals per day and month.

The ledger talks to a `UsageStore`: `record` a row, read the `totals` of some periods. Two stores:

- `SqliteUsageStore`, the default: one SQLite file per user, shared by every server process of that
  user (WAL mode, short transactions). Rows are committed by a writer process of the store's own,
  so the event loop never waits on the disk or on another process's lock; a call's row is in the
  writer's pipe before the call returns, so an answer the client got is never missing from the
  file, even if the server is killed right after (see the class). Totals per (period, provider) are
  kept by a trigger in the same transaction, so a budget check is a key lookup, whatever the size.
- `MemoryUsageStore`, with `SWARM_MCP_STATE_DB=off`, or when the file cannot be used.

Periods are local calendar days (`2026-11-22`) and months (`2026-11`, the day's first seven
characters). A row never holds prompt or answer text, nor a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections import deque
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import anyio

from swarm_inference_mcp.tools.usage_writer import GATHER_S, encode

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
STALE_WRITER_S = 7 * 86400
"""A writer's bookkeeping row left by a killed server is removed after this long."""
BUSY_TIMEOUT_MS = 5000
"""How long a write waits for another process's write to finish (each holds the lock for well under
a millisecond); past that the file counts as locked too long."""

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            day TEXT NOT NULL,
            tool TEXT,
            provider TEXT NOT NULL,
            model TEXT,
            outcome TEXT NOT NULL,
            status INTEGER,
            attempts INTEGER,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            latency_ms INTEGER,
            job_id TEXT
        )""",
        "CREATE INDEX calls_day ON calls (day)",
        """CREATE TABLE totals (
            period TEXT NOT NULL,
            provider TEXT NOT NULL,
            calls INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            total_tokens INTEGER NOT NULL,
            PRIMARY KEY (period, provider)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER add_to_totals AFTER INSERT ON calls BEGIN
            INSERT INTO totals VALUES (
                NEW.day, NEW.provider, 1, NEW.outcome != 'answer',
                coalesce(NEW.prompt_tokens, 0), coalesce(NEW.completion_tokens, 0), coalesce(NEW.total_tokens, 0)
            ) ON CONFLICT (period, provider) DO UPDATE SET
                calls = calls + 1, errors = errors + excluded.errors,
                prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                completion_tokens = completion_tokens + excluded.completion_tokens,
                total_tokens = total_tokens + excluded.total_tokens;
            INSERT INTO totals VALUES (
                substr(NEW.day, 1, 7), NEW.provider, 1, NEW.outcome != 'answer',
                coalesce(NEW.prompt_tokens, 0), coalesce(NEW.completion_tokens, 0), coalesce(NEW.total_tokens, 0)
            ) ON CONFLICT (period, provider) DO UPDATE SET
                calls = calls + 1, errors = errors + excluded.errors,
                prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                completion_tokens = completion_tokens + excluded.completion_tokens,
                total_tokens = total_tokens + excluded.total_tokens;
        END""",
    ),
    2: ("ALTER TABLE calls ADD COLUMN client TEXT",),
    3: (
        """CREATE TABLE client_totals (
            day TEXT NOT NULL,
            client TEXT NOT NULL,
            calls INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            total_tokens INTEGER NOT NULL,
            PRIMARY KEY (day, client)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER add_to_client_totals AFTER INSERT ON calls WHEN NEW.client IS NOT NULL BEGIN
            INSERT INTO client_totals VALUES (
                NEW.day, NEW.client, 1, NEW.outcome != 'answer',
                coalesce(NEW.prompt_tokens, 0), coalesce(NEW.completion_tokens, 0), coalesce(NEW.total_tokens, 0)
            ) ON CONFLICT (day, client) DO UPDATE SET
                calls = calls + 1, errors = errors + excluded.errors,
                prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                completion_tokens = completion_tokens + excluded.completion_tokens,
                total_tokens = total_tokens + excluded.total_tokens;
        END""",
    ),
    4: (
        """CREATE TABLE writers (
            id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            at REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
}
"""Schema version → the statements that upgrade the version before it. Never edit a shipped one."""


@dataclass(frozen=True)
class UsageRow:
    """One upstream request, as recorded."""

    at: float
    tool: str | None
    provider: str
    model: str | None
    outcome: str
    """`answer`, or the error kind."""
    status: int | None
    attempts: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    latency_ms: int
    job_id: str | None
    client: str | None = None

    @property
    def periods(self) -> tuple[str, str]:
        return periods_of(self.at)


@dataclass
class Totals:
    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, row: UsageRow) -> None:
        self.calls += 1
        self.errors += row.outcome != "answer"
        self.prompt_tokens += row.prompt_tokens or 0
        self.completion_tokens += row.completion_tokens or 0
        self.total_tokens += row.total_tokens or 0


LIFETIME = "all"
"""The period that never ends, kept by stores whose totals count every process (`counts_lifetime`)."""


def periods_of(at: float) -> tuple[str, str]:
    """The local day and month of a moment: `("2026-11-22", "2026-11")`."""
    return _periods_of_minute(int(at // 60))


@functools.lru_cache(maxsize=4)  # every row asks; a local day starts on a whole minute in every time zone
def _periods_of_minute(minute: int) -> tuple[str, str]:
    day = time.strftime("%Y-%m-%d", time.localtime(minute * 60))
    return day, day[:7]


class StateError(Exception):
    """The state file cannot be used; the message is one sentence naming the file and the problem."""


class UsageStore(Protocol):
    problem: str | None
    """Why the store no longer records (a sentence), or None while it works."""
    counts_lifetime: bool
    """Whether the store keeps all-time totals (period `all`) of every process sharing it: then the
    lifetime budgets count those instead of this process's since it started."""

    @property
    def backlog(self) -> int:
        """Rows recorded here that the store does not hold yet (in the writer's pipe; kept while Redis is down)."""

    def prepare(self) -> None:
        """A request is about to be sent: start what recording its row will need (at once when ready)."""

    def record(self, row: UsageRow) -> Awaitable[None] | None:
        """Add a row; when an awaitable is returned, the row counts for every process once it is done
        (the caller awaits it before its call returns). Never raises: a failure sets `problem`."""

    async def totals(self, periods: Iterable[str]) -> dict[tuple[str, str], Totals]:
        """Totals by (period, provider) for the given periods (days or months). Raises `StateError`."""

    async def client_totals(self, day: str) -> dict[str, Totals]:
        """Totals by HTTP client for one day. Raises `StateError`."""

    def close(self) -> None: ...


class MemoryUsageStore:
    """This process's usage only: what `SWARM_MCP_STATE_DB=off`, or a state file that cannot be used, leaves."""

    counts_lifetime = False

    def __init__(self, problem: str | None = None) -> None:
        self.problem = problem
        self._totals: dict[tuple[str, str], Totals] = {}
        self._clients: dict[tuple[str, str], Totals] = {}

    backlog = 0

    def prepare(self) -> None:
        pass

    def record(self, row: UsageRow) -> None:
        for period in row.periods:
            self._totals.setdefault((period, row.provider), Totals()).add(row)
        if row.client is not None:
            self._clients.setdefault((row.periods[0], row.client), Totals()).add(row)

    async def client_totals(self, day: str) -> dict[str, Totals]:
        return {client: totals for (at, client), totals in self._clients.items() if at == day}

    async def totals(self, periods: Iterable[str]) -> dict[tuple[str, str], Totals]:
        wanted = set(periods)
        return {key: totals for key, totals in self._totals.items() if key[0] in wanted}

    def close(self) -> None:
        pass


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating it if need be) and upgrade the state file; raises `StateError` in one sentence."""
    if path.is_symlink():
        raise StateError(
            f"the usage state file {path} is a symbolic link; it is not followed: point SWARM_MCP_STATE_DB "
            "at a file of its own"
        )
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # created for this user alone; an existing one is kept
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"the usage state file {path} cannot be opened ({_reason(exc)})") from None
    try:
        _refuse_newer(db, path)  # before anything writes to the file, not even the journal mode
        _refuse_foreign(db, path)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # durable across a killed process; fsync at checkpoints
        _upgrade(db, path)
    except sqlite3.Error as exc:
        db.close()
        raise StateError(f"the usage state file {path} cannot be used ({_reason(exc)})") from None
    except StateError:
        db.close()
        raise
    return db


OUR_TABLES = frozenset(re.findall(r"CREATE TABLE (\w+)", " ".join(" ".join(step) for step in _MIGRATIONS.values())))
"""Every table our migrations create."""


def _refuse_foreign(db: sqlite3.Connection, path: Path) -> None:
    """A file that already holds another program's tables is never written to."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if tables - OUR_TABLES or (tables and not tables & OUR_TABLES):
        raise StateError(
            f"the usage state file {path} is another program's SQLite database (it holds tables that are not "
            "ours); point SWARM_MCP_STATE_DB at a file of its own"
        )


def _refuse_newer(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StateError(
            f"the usage state file {path} was written by a newer swarm-inference-mcp (schema {version}; "
            f"this one knows {SCHEMA_VERSION}); upgrade, or point SWARM_MCP_STATE_DB elsewhere"
        )


def _upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to `SCHEMA_VERSION` in place, all steps in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        _refuse_newer(db, path)  # again, inside the lock: another process may have upgraded meanwhile
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[step]:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("DELETE FROM writers WHERE at < ?", (time.time() - STALE_WRITER_S,))  # of killed servers
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "locked" in text or "busy" in text:
        return f"another process kept it locked for more than {BUSY_TIMEOUT_MS / 1000:g} s"
    if "not a database" in text or "malformed" in text:
        return "it is corrupt or not a SQLite database; move it away to start a new one"
    if "readonly" in text or "unable to open" in text or isinstance(exc, OSError):
        return "it or its directory is not writable"
    return text


class SqliteUsageStore:
    """The shared state file. `open` it (raises `StateError`), `close` it when done.

    Rows are committed by a writer process of the store's own (`tools.usage_writer`), started with the
    first request and fed through a pipe: recording a row is one non-blocking write to that pipe, so
    the event loop never waits on the disk or on another process's lock. A row is in the pipe before
    the call returns, and the writer commits everything in the pipe even when the server is killed,
    so an answer the client got is never missing from the file. (What this costs a call, against a
    commit on the event loop or in a thread: `docs/performance.md`.)

    Totals are read on the event loop (WAL: a read never waits for writers; on the rare busy file,
    in a thread), and they include this process's rows still in the pipe: the writer records in
    each commit the number of the last row it committed, read in the same snapshot as the totals,
    so a budget check counts every row exactly once.
    """

    counts_lifetime = False

    def __init__(
        self, path: Path, db: sqlite3.Connection, *, confirm: bool = False, patience_s: float = BUSY_TIMEOUT_MS / 1000
    ) -> None:
        self.path = path
        self.problem: str | None = None
        self._confirm = confirm
        self._patience_s = patience_s
        """How long a call waits for its commit before it returns anyway (its row stays in the pipe)."""
        """Whether a call waits for its row's commit (the server always does; see `server.app`)."""
        self._confirmations: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db = db
        db.execute("PRAGMA busy_timeout = 0")
        self._reader: sqlite3.Connection | None = None
        """Opened on first need, for reads that met a busy file, used by one worker thread at a time."""
        self._one_thread = anyio.CapacityLimiter(1)
        self._id = secrets.token_hex(8)
        self._seq = 0
        self._unwritten: deque[tuple[int, UsageRow]] = deque()
        """Rows sent to the writer that it may not have committed yet, oldest first."""
        self._writer: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None
        self._backlog = bytearray()
        """What the pipe could not take yet (the writer is behind: waiting for a lock, or in a burst)."""

    @property
    def backlog(self) -> int:
        return len(self._unwritten)

    @classmethod
    def open(cls, path: Path, *, confirm: bool = False, patience_s: float = BUSY_TIMEOUT_MS / 1000) -> SqliteUsageStore:
        return cls(path, connect(path), confirm=confirm, patience_s=patience_s)

    def prepare(self) -> None:
        """Start the writer with the first request, so that it boots while the upstream works, not
        while a burst of answers is being returned (nor while the server itself starts)."""
        if self._pipe is None and self.problem is None:
            try:
                self._start_writer()
            except OSError as exc:
                self._fail(f"its writer process could not start ({exc.strerror or exc})")

    def record(self, row: UsageRow) -> Awaitable[None] | None:
        """Into the writer's pipe. With budgets every process counts, the returned future is done once
        the row is committed (or the writer failed): a call returns only when all processes see it."""
        if self.problem is not None:
            return None
        self._seq += 1
        self._unwritten.append((self._seq, row))
        values = (
            row.at, row.periods[0], row.tool, row.provider, row.model, row.outcome, row.status, row.attempts,
            row.prompt_tokens, row.completion_tokens, row.total_tokens, row.latency_ms, row.job_id, row.client,
        )  # fmt: skip
        self._send(encode(self._seq, values))
        if len(self._unwritten) > MAX_UNWRITTEN:
            self._forget_committed(self._committed_seq(self._db))
        if self._loop is None or self.problem is not None:
            return None
        confirmed = self._loop.create_future()
        self._confirmations.append((self._seq, confirmed))
        return self._committed(confirmed)

    async def _committed(self, confirmed: asyncio.Future[None]) -> None:
        """Until the writer confirms the row; a file locked for long holds a call no more than `BUSY_TIMEOUT_MS`
        (the row stays in the pipe and is committed later)."""
        with anyio.move_on_after(self._patience_s) as waited:
            await confirmed
        if waited.cancelled_caught:
            log.warning("usage state file %s: a row waits for another process's lock; the call did not", self.path)

    def _on_confirmation(self, stream: IO[bytes]) -> None:
        """The writer said which rows are committed: those calls may return (on the event loop)."""
        try:
            data = os.read(stream.fileno(), 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the writer is gone: nobody will confirm the rest
            assert self._loop is not None  # noqa: S101 - set with the reader
            self._loop.remove_reader(stream.fileno())
            self._release(math.inf)
            return
        self._release(int(data.rstrip(b"\n").rsplit(b"\n", 1)[-1]))

    def _release(self, committed: float) -> None:
        while self._confirmations and self._confirmations[0][0] <= committed:
            _, confirmed = self._confirmations.popleft()
            if not confirmed.done():
                confirmed.set_result(None)

    def _send(self, line: bytes) -> None:
        """Into the writer's pipe, never blocking: what the pipe cannot take now (the writer is behind:
        waiting for another process's lock, or in a burst) waits for the next row."""
        try:
            if self._pipe is None:
                self._start_writer()
            assert self._pipe is not None  # noqa: S101 - just started
            if not self._backlog:
                try:
                    sent = os.write(self._pipe, line)
                except BlockingIOError:
                    sent = 0
                self._backlog += line[sent:]
                return
            self._backlog += line  # in place: a burst must not copy the whole backlog for every row
            with contextlib.suppress(BlockingIOError):  # still full: the next row tries again
                del self._backlog[: os.write(self._pipe, self._backlog)]
        except OSError as exc:
            self._fail(f"its writer process stopped ({exc.strerror or exc})")

    def _start_writer(self) -> None:
        script = Path(__file__).with_name("usage_writer.py")
        gather = "0" if self._confirm else str(GATHER_S)
        self._writer = subprocess.Popen(  # noqa: S603 - our own script, with our own arguments
            [sys.executable, "-I", "-S", str(script), str(self.path), self._id, gather],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if self._confirm else subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,  # a Ctrl-C or a signal to the host's process group must not cut its last commit
        )
        assert self._writer.stdin is not None  # noqa: S101 - asked for above
        self._pipe = self._writer.stdin.fileno()
        try:
            os.set_blocking(self._pipe, False)
        except OSError:  # pipes without non-blocking mode (Windows before Python 3.12): a write blocks only
            log.debug("the usage writer's pipe stays blocking")  # when the writer is 64 KiB behind
        if self._confirm and self._writer.stdout is not None:
            self._listen(self._writer.stdout)

    def _listen(self, stream: IO[bytes]) -> None:
        """Read the writer's confirmations on the event loop (where it cannot, calls do not wait for them)."""
        try:
            loop = asyncio.get_running_loop()
            os.set_blocking(stream.fileno(), False)
            loop.add_reader(stream.fileno(), self._on_confirmation, stream)
        except (RuntimeError, NotImplementedError, OSError):
            log.warning("calls will not wait for their usage rows to be committed on this platform")
            return
        self._loop = loop

    def _fail(self, reason: str) -> None:
        self.problem = f"the usage state file {self.path} cannot be written ({reason})"
        log.error("%s; usage is kept in memory from now on.", self.problem)
        self._release(math.inf)

    async def totals(self, periods: Iterable[str]) -> dict[tuple[str, str], Totals]:
        wanted = list(periods)
        columns = "period, provider, calls, errors, prompt_tokens, completion_tokens, total_tokens"
        marks = ",".join("?" * len(wanted))
        query = f"SELECT {columns} FROM totals WHERE period IN ({marks})"  # noqa: S608 - only placeholders go in
        rows = await self._read(query, wanted)
        found = {(period, provider): Totals(*numbers) for period, provider, *numbers in rows}
        for _, row in self._unwritten:
            for period in row.periods:
                if period in wanted:
                    found.setdefault((period, row.provider), Totals()).add(row)
        return found

    async def client_totals(self, day: str) -> dict[str, Totals]:
        columns = "client, calls, errors, prompt_tokens, completion_tokens, total_tokens"
        rows = await self._read(f"SELECT {columns} FROM client_totals WHERE day = ?", [day])  # noqa: S608
        found = {client: Totals(*numbers) for client, *numbers in rows}
        for _, row in self._unwritten:
            if row.client is not None and row.periods[0] == day:
                found.setdefault(row.client, Totals()).add(row)
        return found

    async def _read(self, query: str, params: list[str]) -> list[tuple[Any, ...]]:
        """Rows of `query` and, in the same snapshot, which of our rows are committed (then forgotten
        here). On the loop (WAL: a read does not wait for writers), or in a thread on the rare busy file."""
        try:
            try:
                rows, committed = self._snapshot(self._db, query, params)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
                rows, committed = await anyio.to_thread.run_sync(
                    self._snapshot, self._reader_db(), query, params, limiter=self._one_thread
                )
        except sqlite3.Error as exc:
            raise StateError(f"the usage state file {self.path} cannot be read ({_reason(exc)})") from None
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
        """End the writer's input and wait for it to commit the rest (blocking: call it off the loop)."""
        if self._loop is not None and self._writer is not None and self._writer.stdout is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                self._loop.call_soon_threadsafe(self._loop.remove_reader, self._writer.stdout.fileno())
        if self._pipe is not None and self._writer is not None:
            with contextlib.suppress(OSError):
                os.set_blocking(self._pipe, True)
                if self._backlog:
                    os.write(self._pipe, self._backlog)
            with contextlib.suppress(OSError):
                assert self._writer.stdin is not None  # noqa: S101 - it has one
                self._writer.stdin.close()
            try:
                self._writer.wait(timeout=BUSY_TIMEOUT_MS / 1000 * 3)
            except subprocess.TimeoutExpired:
                log.warning("usage writer for %s did not finish in time; it goes on in the background", self.path)
            if self._writer.stdout is not None:
                self._writer.stdout.close()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
            if self._reader is not None:
                self._reader.close()


MAX_UNWRITTEN = 10_000
"""With no budget reading the totals, how many sent rows are remembered before asking which are committed."""


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text
