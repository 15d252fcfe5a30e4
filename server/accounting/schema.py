"""The usage state file: where it is opened, and its schema, upgraded in place (never an edit of a shipped step).

One SQLite file per user, shared by every server process of that user (WAL mode, short transactions).
`calls` holds one row per upstream request (`server.accounting.ledger.COLUMNS`); `totals` (per period
and provider) and `client_totals` (per day and client) are kept in the same transaction as the row,
with the change Python computed (`rows.change`), so a budget check is a key lookup whatever the size.
Before schema 5 triggers kept them; `writers` records, per process, the last write it committed;
`oauth_grants` holds the built-in authorization server's grants (schema 6).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from pathlib import Path

from swarm_inference_mcp.server.accounting.ledger import StateError

SCHEMA_VERSION = 6
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
    5: (
        "ALTER TABLE calls ADD COLUMN ref TEXT",
        "ALTER TABLE calls ADD COLUMN reserved_tokens INTEGER",
        "ALTER TABLE calls ADD COLUMN shared INTEGER NOT NULL DEFAULT 0",
        "CREATE UNIQUE INDEX calls_ref ON calls (ref) WHERE ref IS NOT NULL",
        "DROP TRIGGER add_to_totals",
        "DROP TRIGGER add_to_client_totals",
    ),
    6: (  # the built-in OAuth authorization server's grants (server.gateway.grants), kept hashed
        """CREATE TABLE oauth_grants (
            key TEXT PRIMARY KEY,
            family TEXT NOT NULL,
            expires_at REAL NOT NULL,
            used INTEGER NOT NULL DEFAULT 0,
            grant_json TEXT NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX oauth_grants_family ON oauth_grants (family)",
    ),
}
"""Schema version → the statements that upgrade the version before it. Never edit a shipped one."""
GRANTS_TABLE = _MIGRATIONS[6]


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
        raise StateError(f"the usage state file {path} cannot be opened ({reason(exc)})") from None
    try:
        _refuse_newer(db, path)  # before anything writes to the file, not even the journal mode
        _refuse_foreign(db, path)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # durable across a killed process; fsync at checkpoints
        _upgrade(db, path)
    except sqlite3.Error as exc:
        db.close()
        raise StateError(f"the usage state file {path} cannot be used ({reason(exc)})") from None
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


def reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "locked" in text or "busy" in text:
        return f"another process kept it locked for more than {BUSY_TIMEOUT_MS / 1000:g} s"
    if "not a database" in text or "malformed" in text:
        return "it is corrupt or not a SQLite database; move it away to start a new one"
    if "readonly" in text or "unable to open" in text or isinstance(exc, OSError):
        return "it or its directory is not writable"
    return text
