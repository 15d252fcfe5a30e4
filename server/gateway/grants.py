"""What the built-in authorization server hands out and must remember: registered clients, sign-ins in
progress, codes, access and refresh tokens — each kept under the SHA-256 of its secret, never the secret.

A grant belongs to a family (one sign-in and everything issued from it): a code used twice or a
refresh token used after it was rotated revokes its whole family. `use` marks a grant used at most
once, atomically, so two racing exchanges of one code or one refresh token cannot both win.

Kept in the state file (a table of its own beside the usage tables, or in memory when the state
file is off), or in Redis when the server has one, so that every instance honours what another issued.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import anyio
from pydantic import BaseModel

from swarm_inference_mcp.server.accounting.schema import GRANTS_TABLE, connect
from swarm_inference_mcp.server.clients import digest as sha256


def digest(kind: str, secret: str) -> str:
    """The key a secret is kept under: its kind and the SHA-256 of the secret (`clients.digest`, in hex)."""
    return kind + ":" + sha256(secret).hex()


class Grant(BaseModel):
    """One kept grant; `data` is what its kind needs (client, subject, scopes…), never a secret."""

    kind: str
    family: str
    expires_at: float
    used: bool = False
    data: dict[str, Any]


class Grants(Protocol):
    async def put(self, key: str, grant: Grant) -> None: ...

    async def get(self, key: str) -> Grant | None:
        """The grant kept under `key`, unexpired, or None."""

    async def use(self, key: str) -> tuple[Grant | None, bool]:
        """The grant under `key` and whether this call was the one that marked it used."""

    async def revoke(self, family: str) -> None:
        """Forget every grant of a family."""

    async def aclose(self) -> None:
        """Let go of the file or the connection (the server stops)."""


class SqliteGrants:
    """Grants in a table of the state file (`:memory:` when it is off)."""

    def __init__(self, path: Path | None) -> None:
        """Raises `StateError` in one sentence when the state file cannot be used."""
        if path is None:
            self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            for statement in GRANTS_TABLE:
                self._db.execute(statement)
        else:
            self._db = connect(path)  # its schema (6 and later) holds the table
        self._lock = threading.Lock()

    async def put(self, key: str, grant: Grant) -> None:
        await anyio.to_thread.run_sync(self._put, key, grant)

    async def get(self, key: str) -> Grant | None:
        return await anyio.to_thread.run_sync(self._get, key)

    async def use(self, key: str) -> tuple[Grant | None, bool]:
        return await anyio.to_thread.run_sync(self._use, key)

    async def revoke(self, family: str) -> None:
        await anyio.to_thread.run_sync(self._revoke, family)

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()

    def _put(self, key: str, grant: Grant) -> None:
        with self._lock:  # each statement commits on its own (autocommit)
            self._db.execute("DELETE FROM oauth_grants WHERE expires_at < ?", (time.time(),))
            self._db.execute(
                "INSERT OR REPLACE INTO oauth_grants VALUES (?, ?, ?, ?, ?)",
                (key, grant.family, grant.expires_at, int(grant.used), grant.model_dump_json()),
            )

    def _get(self, key: str) -> Grant | None:
        with self._lock:
            row = self._db.execute(
                "SELECT grant_json, used FROM oauth_grants WHERE key = ? AND expires_at >= ?", (key, time.time())
            ).fetchone()
        return None if row is None else Grant.model_validate({**json.loads(row[0]), "used": bool(row[1])})

    def _use(self, key: str) -> tuple[Grant | None, bool]:
        with self._lock:
            marked = self._db.execute(
                "UPDATE oauth_grants SET used = 1 WHERE key = ? AND used = 0 AND expires_at >= ?", (key, time.time())
            ).rowcount
        return self._get(key), marked == 1

    def _revoke(self, family: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM oauth_grants WHERE family = ?", (family,))
