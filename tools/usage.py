"""Usage that outlives the process: one row per upstream request, and totals per day and month.

The ledger talks to a `UsageStore`: `record` a row, read the `totals` of some periods. Two stores:

- `SqliteUsageStore`, the default: one SQLite file per user, shared by every server process of that
  user (WAL mode, one short transaction per row). Rows are written by a thread of the store's own,
  so the event loop never waits on the disk or on another process's lock; a call still waits for
  its row to be committed before it returns, so an answer the client got is never missing from the
  file, even if the process is killed right after. Totals per (period, provider) are kept in the
  same transaction, so a budget check is a key lookup, whatever the file's size.
- `MemoryUsageStore`, with `SWARM_MCP_STATE_DB=off`, or when the file cannot be used.

Periods are local calendar days (`2026-11-22`) and months (`2026-11`). A row never holds prompt or
answer text, nor a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import anyio

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
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
    ),
    2: ("ALTER TABLE calls ADD COLUMN client TEXT",),
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


def periods_of(at: float) -> tuple[str, str]:
    """The local day and month of a moment: `("2026-11-22", "2026-11")`."""
    day = time.strftime("%Y-%m-%d", time.localtime(at))
    return day, day[:7]


class StateError(Exception):
    """The state file cannot be used; the message is one sentence naming the file and the problem."""


class UsageStore(Protocol):
    problem: str | None
    """Why the store no longer records (a sentence), or None while it works."""

    async def record(self, row: UsageRow) -> None:
        """Add a row; returns once it is stored. Never raises: a failure sets `problem`."""

    async def totals(self, periods: Iterable[str]) -> dict[tuple[str, str], Totals]:
        """Totals by (period, provider) for the given periods (days or months). Raises `StateError`."""

    def close(self) -> None: ...


class MemoryUsageStore:
    """This process's usage only: what `SWARM_MCP_STATE_DB=off`, or a state file that cannot be used, leaves."""

    def __init__(self, problem: str | None = None) -> None:
        self.problem = problem
        self._totals: dict[tuple[str, str], Totals] = {}

    async def record(self, row: UsageRow) -> None:
        for period in row.periods:
            self._totals.setdefault((period, row.provider), Totals()).add(row)

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
    " total_tokens, latency_ms, job_id, client) VALUES (:at, :day, :tool, :provider, :model, :outcome, :status,"
    " :attempts, :prompt_tokens, :completion_tokens, :total_tokens, :latency_ms, :job_id, :client)"
)
_ADD_TOTALS = (
    "INSERT INTO totals VALUES (:period, :provider, 1, :error, :prompt, :completion, :total)"
    " ON CONFLICT (period, provider) DO UPDATE SET calls = calls + 1, errors = errors + excluded.errors,"
    " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
    " completion_tokens = completion_tokens + excluded.completion_tokens,"
    " total_tokens = total_tokens + excluded.total_tokens"
)


class SqliteUsageStore:
    """The shared state file. `open` it (raises `StateError`), `close` it when done."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self.problem: str | None = None
        self._db = db
        self._reader: sqlite3.Connection | None = None
        self._reading = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[UsageRow, Future[None]] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_rows, name="usage-writer", daemon=True)
        self._writer.start()

    @classmethod
    def open(cls, path: Path) -> SqliteUsageStore:
        return cls(path, connect(path))

    async def record(self, row: UsageRow) -> None:
        if self.problem is not None:
            return
        done: Future[None] = Future()
        self._queue.put((row, done))
        with anyio.CancelScope(shield=True):  # a call cancelled meanwhile is still counted
            await asyncio.wrap_future(done)

    async def totals(self, periods: Iterable[str]) -> dict[tuple[str, str], Totals]:
        wanted = list(periods)
        return await anyio.to_thread.run_sync(self._read_totals, wanted)

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=BUSY_TIMEOUT_MS / 1000 + 1)
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
            if self._reader is not None:
                self._reader.close()

    def _read_totals(self, periods: list[str]) -> dict[tuple[str, str], Totals]:
        marks = ",".join("?" * len(periods))
        query = f"SELECT period, provider, calls, errors, prompt_tokens, completion_tokens, total_tokens FROM totals WHERE period IN ({marks})"  # noqa: S608, E501 - only placeholders are interpolated
        try:
            with self._reading:
                if self._reader is None:  # read-only, so WAL lets it read beside any writer
                    self._reader = sqlite3.connect(
                        f"{self.path.as_uri()}?mode=ro",
                        uri=True,
                        timeout=BUSY_TIMEOUT_MS / 1000,
                        check_same_thread=False,
                    )
                rows = self._reader.execute(query, periods).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"the usage state file {self.path} cannot be read ({_reason(exc)})") from None
        return {(period, provider): Totals(*numbers) for period, provider, *numbers in rows}

    def _write_rows(self) -> None:
        while (item := self._queue.get()) is not None:
            row, done = item
            try:
                if self.problem is None:
                    self._write(row)
            except sqlite3.Error as exc:
                self.problem = f"the usage state file {self.path} cannot be written ({_reason(exc)})"
                log.error("%s; usage is no longer recorded there", self.problem)
            finally:
                done.set_result(None)

    def _write(self, row: UsageRow) -> None:
        values = asdict(row)
        day, month = row.periods
        values["day"] = day
        added = {
            "provider": row.provider,
            "error": int(row.outcome != "answer"),
            "prompt": row.prompt_tokens or 0,
            "completion": row.completion_tokens or 0,
            "total": row.total_tokens or 0,
        }
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(_INSERT, values)
            self._db.execute(_ADD_TOTALS, {**added, "period": day})
            self._db.execute(_ADD_TOTALS, {**added, "period": month})
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
