"""The one connection to Redis that instances of a deployment share (`SWARM_MCP_REDIS_URL`).

Imported only when Redis is configured: `redis` is an optional dependency (`pip install
'swarm-inference-mcp[redis]'`) and a stdio server never pays for importing it.

Nothing may hang on a dead Redis. Every command has a short timeout and is never retried by the
client library; after a failure the link counts as down for `RETRY_AFTER_S`, and commands fail at
once (`RedisDown`) instead of each waiting for its own timeout. Then the next command tries again,
and the first that succeeds brings the link back (both moments are logged, once each).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from swarm_inference_mcp.server.accounting.ledger import StateError
from swarm_inference_mcp.server.scaleout.url import RedisUrlError, parse_redis_url

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0
"""Longest any one Redis command (or connecting) may take."""
RETRY_AFTER_S = 1.0
"""After a failure, how long commands fail at once before Redis is tried again."""
PREFIX = "swarm-mcp:"
"""Every key and channel of ours starts with it, so one Redis can hold other things too."""

T = TypeVar("T")


class RedisDown(StateError):
    """Redis cannot be reached or failed a command; the message is one sentence naming the host."""


class RedisLink:
    """A Redis client with the failure rule above. `open` it (raises `RedisDown`), `aclose` it when done."""

    def __init__(self, client: aioredis.Redis, where: str) -> None:
        self.client = client
        self.where = where
        """The URL without credentials, for every sentence that names it."""
        self._down_until = 0.0
        self._problem: str | None = None

    @classmethod
    async def open(cls, url: str, password_file: str | None = None) -> RedisLink:
        """Connect and ping; a Redis that does not answer refuses the start in one sentence."""
        try:
            target = parse_redis_url(url)
        except RedisUrlError as exc:
            raise RedisDown(f"SWARM_MCP_REDIS_URL {exc}") from None
        where = target.where
        password = target.password
        if password_file:
            try:
                text = await (await anyio.Path(password_file).expanduser()).read_text(encoding="utf-8")
                password = text.strip() or password
            except OSError as exc:
                raise RedisDown(f"the Redis password file {password_file} cannot be read ({exc.strerror})") from None
        try:
            client = aioredis.Redis.from_url(
                target.bare_url,
                username=target.username,
                password=password,
                socket_timeout=TIMEOUT_S,
                socket_connect_timeout=TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except ValueError as exc:
            raise RedisDown(
                f"SWARM_MCP_REDIS_URL is not a Redis URL the client takes ({where}): {_reason(exc)}"
            ) from None
        link = cls(client, where)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise RedisDown(f"Redis at {where} cannot be reached ({_reason(exc)})") from None
        return link

    @property
    def problem(self) -> str | None:
        """Why Redis is down (one sentence), or None while it answers."""
        return self._problem

    async def run(self, command: Callable[[Any], Awaitable[T]]) -> T:
        """Run `command(client)`; raises `RedisDown` at once while Redis counts as down."""
        if self._problem is not None and time.monotonic() < self._down_until:
            raise RedisDown(self._problem)
        try:
            result = await command(self.client)
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + RETRY_AFTER_S
            if self._problem is None:
                self._problem = f"Redis at {self.where} cannot be reached ({_reason(exc)})"
                log.error("%s; retrying every %g s.", self._problem, RETRY_AFTER_S)
            raise RedisDown(self._problem) from None
        if self._problem is not None:
            self._problem = None
            log.warning("Redis at %s answers again.", self.where)
        return result

    async def aclose(self) -> None:
        await self.client.aclose()


async def redis_problem(url: str, password_file: str | None) -> str | None:
    """Why this Redis cannot be used (one sentence naming its host, never its password), or None: the
    check made before start-up and by `swarm-inference-mcp check`."""
    try:
        link = await RedisLink.open(url, password_file)
    except RedisDown as err:
        return str(err)
    await link.aclose()
    return None


def _reason(exc: BaseException) -> str:
    """The library's message without anything it may have quoted from the URL."""
    text = str(exc) or type(exc).__name__
    if "@" in text:
        return type(exc).__name__
    return text.rstrip(".")
