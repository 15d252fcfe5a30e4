"""Usage that outlives the process: one row per upstream request, and totals per day and month.

The ledger talks to a `UsageStore`: `record` a row, read the `totals` of some periods. Two stores:

- `SqliteUsageStore`, the default: one SQLite file per user, shared by every server process of that
  user (WAL mode, one short transaction per row). A call's row is committed before the call
  returns, so an answer the client got is never missing from the file, even if the process is
  killed right after; the event loop never waits on the disk or on another process's lock (see the
  class). Totals per (period, provider) are kept in the same transaction, so a budget check is a
  key lookup, whatever the file's size.
- `MemoryUsageStore`, with `SWARM_MCP_STATE_DB=off`, or when the file cannot be used.

Periods are local calendar days (`2026-11-22`) and months (`2026-11`, the day's first seven
characters). A row never holds prompt or answer text, nor a key.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
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
    day = time.strftime("%Y-%m-%d", time.localtime(at))
    return day, day[:7]


class StateError(Exception):
    """The state file cannot be used; the message is one sentence naming the file and the problem."""


class UsageStore(Protocol):
    problem: str | None
    """Why the store no longer records (a sentence), or None while it works."""
    counts_lifetime: bool
    """Whether the store keeps all-time totals (period `all`) of every process sharing it: then the
    lifetime budgets count those instead of this process's since it started."""

    def record(self, row: UsageRow) -> Awaitable[None] | None:
        """Add a row: stored on return, or once the returned awaitable is done (when it must wait
        for another process). Never raises: a failure sets `problem`."""

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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"the usage state file {path} cannot be opened ({_reason(exc)})") from None
    try:
        _refuse_newer(db, path)  # before anything writes to the file, not even the journal mode
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


_INSERT = (
    "INSERT INTO calls (at, day, tool, provider, model, outcome, status, attempts, prompt_tokens, completion_tokens,"
    " total_tokens, latency_ms, job_id, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqliteUsageStore:
    """The shared state file. `open` it (raises `StateError`), `close` it when done.

    A row is committed on the event loop's own thread: about 35 µs, and it never waits. That
    connection has no busy timeout (a write lock held by another process fails at once) and makes no
    automatic checkpoints (the only step that syncs the disk). A row that meets another process's
    lock is written by a worker thread that waits for it, while the call awaits that without
    blocking the loop; a thread of the store's own checkpoints every few seconds. Handing every row
    to a thread instead cost 300-400 µs a call in thread switches, ten times the write itself.
    """

    CHECKPOINT_S = 2.0
    counts_lifetime = False

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self.problem: str | None = None
        self._db = db
        db.execute("PRAGMA busy_timeout = 0")
        db.execute("PRAGMA wal_autocheckpoint = 0")
        self._waiting: sqlite3.Connection | None = None
        """Opened on first need, used by one worker thread at a time: for rows that met a lock."""
        self._one_thread = anyio.CapacityLimiter(1)
        self._written = threading.Event()
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoints, name="usage-checkpoints", daemon=True)
        self._checkpointer.start()

    @classmethod
    def open(cls, path: Path) -> SqliteUsageStore:
        return cls(path, connect(path))

    def record(self, row: UsageRow) -> Awaitable[None] | None:
        if self.problem is not None:
            return None
        try:
            _write(self._db, row)
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                return self._record_waiting(row)
            self._fail(exc)
        except sqlite3.Error as exc:
            self._fail(exc)
        self._written.set()
        return None

    async def _record_waiting(self, row: UsageRow) -> None:
        """Another process holds the write lock: wait for it in a worker thread, not on the loop."""
        try:
            await anyio.to_thread.run_sync(self._write_waiting, row, limiter=self._one_thread)
        except sqlite3.Error as exc:
            self._fail(exc)
        self._written.set()

    def _fail(self, exc: sqlite3.Error) -> None:
        self.problem = f"the usage state file {self.path} cannot be written ({_reason(exc)})"
        log.error("%s; usage is kept in memory from now on.", self.problem)

    async def totals(self, periods: Iterable[str]) -> dict[tuple[str, str], Totals]:
        wanted = list(periods)
        columns = "period, provider, calls, errors, prompt_tokens, completion_tokens, total_tokens"
        marks = ",".join("?" * len(wanted))
        query = f"SELECT {columns} FROM totals WHERE period IN ({marks})"  # noqa: S608 - only placeholders go in
        rows = await self._read(query, wanted)
        return {(period, provider): Totals(*numbers) for period, provider, *numbers in rows}

    async def client_totals(self, day: str) -> dict[str, Totals]:
        columns = "client, calls, errors, prompt_tokens, completion_tokens, total_tokens"
        rows = await self._read(f"SELECT {columns} FROM client_totals WHERE day = ?", [day])  # noqa: S608
        return {client: Totals(*numbers) for client, *numbers in rows}

    async def _read(self, query: str, params: list[str]) -> list[tuple[Any, ...]]:
        """On the loop (WAL: a read does not wait for writers), or in a thread on the rare busy file."""
        try:
            try:
                rows: list[tuple[Any, ...]] = self._db.execute(query, params).fetchall()
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
                rows = await anyio.to_thread.run_sync(self._read_waiting, query, params, limiter=self._one_thread)
        except sqlite3.Error as exc:
            raise StateError(f"the usage state file {self.path} cannot be read ({_reason(exc)})") from None
        return rows

    def close(self) -> None:
        self._closing.set()
        self._checkpointer.join(timeout=BUSY_TIMEOUT_MS / 1000 + 1)
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
            if self._waiting is not None:
                self._waiting.close()

    def _waiting_db(self) -> sqlite3.Connection:
        if self._waiting is None:
            self._waiting = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        return self._waiting

    def _write_waiting(self, row: UsageRow) -> None:
        _write(self._waiting_db(), row)

    def _read_waiting(self, query: str, params: list[str]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._waiting_db().execute(query, params).fetchall()
        return rows

    def _checkpoints(self) -> None:
        """Move the write-ahead log into the file now and then (and at the end), off the event loop."""
        checkpointer: sqlite3.Connection | None = None
        try:
            while not self._closing.wait(self.CHECKPOINT_S) or self._written.is_set():
                if not self._written.is_set():
                    continue
                self._written.clear()
                if checkpointer is None:
                    checkpointer = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
                checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
                if self._closing.is_set():
                    break
        except sqlite3.Error as exc:
            log.warning("usage state file %s: a checkpoint failed (%s); the next one will retry", self.path, exc)
        finally:
            if checkpointer is not None:
                checkpointer.close()


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _write(db: sqlite3.Connection, row: UsageRow) -> None:
    """The row, in one statement and so one transaction: the `add_to_totals` trigger adds it to its
    day's and month's totals inside it (one call into SQLite instead of five)."""
    values = (
        row.at, row.periods[0], row.tool, row.provider, row.model, row.outcome, row.status, row.attempts,
        row.prompt_tokens, row.completion_tokens, row.total_tokens, row.latency_ms, row.job_id, row.client,
    )  # fmt: skip
    db.execute(_INSERT, values)
