"""Where the server keeps what outlives a call: the usage store and the job board (and the built-in
authorization server's grants), in this process and the state file, or in Redis shared by several
instances (imported only then)."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from swarm_inference_mcp.server.accounting.ledger import MemoryUsageStore, StateError, UsageStore
from swarm_inference_mcp.server.accounting.schema import BUSY_TIMEOUT_MS
from swarm_inference_mcp.server.accounting.sqlite import SqliteUsageStore
from swarm_inference_mcp.server.config import Settings
from swarm_inference_mcp.server.jobs.board import JobBoard, LocalBoard

if TYPE_CHECKING:
    from swarm_inference_mcp.server.gateway.grants import Grants

log = logging.getLogger(__name__)

COMMIT_PATIENCE_S = 0.25
"""Without budgets, the longest a call waits for its usage row's commit (a commit takes milliseconds)."""
BUSY_TIMEOUT_S = BUSY_TIMEOUT_MS / 1000


def store_location(settings: Settings) -> dict[str, str | None]:
    """Where the shared usage is read from, as swarm://usage names it (never a password)."""
    if settings.redis_url is not None:
        from swarm_inference_mcp.server.scaleout.url import describe_url  # noqa: PLC0415 - only with Redis

        return {"redis": describe_url(settings.redis_url.get_secret_value())}
    path = settings.state_path()
    return {"state_db": str(path) if path is not None else None}


@asynccontextmanager
async def shared_state(settings: Settings, instance: str) -> AsyncIterator[tuple[UsageStore, JobBoard]]:
    """The usage store and job board: the state file and this process alone, or Redis shared by several
    instances (imported only then). Raises `StateError` when the configured Redis does not answer."""
    if settings.redis_url is None:
        store = await open_usage_store(settings)
        try:
            yield store, LocalBoard()
        finally:
            await anyio.to_thread.run_sync(store.close)
        return
    from swarm_inference_mcp.server.scaleout.board import RedisBoard  # noqa: PLC0415 - the redis client is loaded only when configured
    from swarm_inference_mcp.server.scaleout.link import RedisLink  # noqa: PLC0415
    from swarm_inference_mcp.server.scaleout.usage import RedisUsageStore  # noqa: PLC0415

    link = await RedisLink.open(settings.redis_url.get_secret_value(), settings.redis_password_file)
    redis_store = RedisUsageStore(link)
    try:
        yield redis_store, RedisBoard(link, instance, lease_s=settings.redis_lease)
    finally:
        redis_store.close()
        with anyio.CancelScope(shield=True):
            await link.aclose()


def patience_s(settings: Settings) -> float:
    """How long a request waits for its usage row's commit, before it leaves and after it ends.

    A request is sent once its row is on file and returns once the row says how it ended: every request
    that left is on file, whatever is killed (the cost a call pays for it: docs/performance.md), and
    the budgets of every process see it. Only a file another process keeps locked holds a call longer
    than a moment, and only where a budget needs the row counted; without one the call goes on after
    COMMIT_PATIENCE_S, its row queued for the writer thread."""
    counted = any(budget.shared for budget in settings.budgets()) or settings.tokens_file is not None
    return BUSY_TIMEOUT_S if counted else COMMIT_PATIENCE_S


async def open_usage_store(settings: Settings) -> UsageStore:
    """The usage state file, or memory when it is off or cannot be used (said in one log line)."""
    path = settings.state_path()
    if path is None:
        return MemoryUsageStore()
    try:
        opening = functools.partial(SqliteUsageStore.open, path, patience_s=patience_s(settings))
        return await anyio.to_thread.run_sync(opening)
    except StateError as err:
        shared = any(budget.shared for budget in settings.budgets())
        consequence = (
            "calls are refused while a daily or monthly token budget is set"
            if shared
            else "usage is kept in memory for this process"
        )
        log.error("%s; %s.", err, consequence)
        return MemoryUsageStore(problem=str(err))


def open_grants(settings: Settings) -> Grants:
    """Where the built-in authorization server keeps what it issued: Redis when the instances share one,
    else the state file (in memory when it is off). Raises `StateError` when the file cannot be used."""
    if settings.redis_url is not None:
        from swarm_inference_mcp.server.scaleout.grants import RedisGrants  # noqa: PLC0415 - only with Redis

        return RedisGrants(settings.redis_url.get_secret_value(), settings.redis_password_file)
    from swarm_inference_mcp.server.gateway.grants import SqliteGrants  # noqa: PLC0415 - over HTTP only

    return SqliteGrants(settings.state_path())
