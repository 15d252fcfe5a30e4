"""Usage kept in Redis, for several instances that share one budget (`SWARM_MCP_REDIS_URL`).

Per upstream request, one MULTI/EXEC (a single round trip) adds the row to the totals of its day,
its month and all time (hashes `swarm-mcp:totals:<period>`, fields `<provider>:<measure>`), to its
HTTP client's day (`swarm-mcp:clients:<day>`), and appends it to the stream `swarm-mcp:calls`
(trimmed to `KEEP_DAYS`), which `swarm-inference-mcp usage` reads. Counting is atomic: N instances
adding at once never lose an increment.

When Redis is down, rows wait in memory (at most `MAX_UNSENT`) and go with the next row that gets
through, so the shared totals catch up once Redis is back. Reads fail with `RedisDown` meanwhile:
the ledger then refuses calls while a budget is set (it cannot be counted) and goes on otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import astuple, fields
from typing import Any

from redis.asyncio.client import Pipeline

from tools.redis_link import PREFIX, RedisDown, RedisLink
from tools.usage import LIFETIME, Totals, UsageRow

log = logging.getLogger(__name__)

KEEP_DAYS = 400
MAX_UNSENT = 10_000
MEASURES = tuple(f.name for f in fields(Totals))
_ROW_FIELDS = tuple(f.name for f in fields(UsageRow))
CALLS = PREFIX + "calls"


def _totals_key(period: str) -> str:
    return f"{PREFIX}totals:{period}"


def _clients_key(day: str) -> str:
    return f"{PREFIX}clients:{day}"


class RedisUsageStore:
    """The `UsageStore` of a deployment sharing Redis."""

    counts_lifetime = True
    problem: str | None = None
    """Never set: rows that met a dead Redis are sent later; reads say what is wrong instead."""

    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._unsent: list[UsageRow] = []

    @property
    def where(self) -> str:
        return self._link.where

    async def record(self, row: UsageRow) -> None:
        rows = [*self._unsent, row]
        try:
            await self._link.run(lambda client: _add(client.pipeline(transaction=True), rows).execute())
        except RedisDown:  # logged by the link: keep the row for the next attempt
            self._unsent = rows[-MAX_UNSENT:]
            if len(rows) > MAX_UNSENT:
                log.warning("Redis is down: %d usage rows were dropped from the shared totals", len(rows) - MAX_UNSENT)
            return
        if self._unsent:
            log.info("sent %d usage rows kept while Redis was down", len(self._unsent))
        self._unsent = []

    async def totals(self, periods: Iterable[str]) -> dict[tuple[str, str], Totals]:
        wanted = list(periods)

        async def read(client: Any) -> list[dict[bytes, bytes]]:
            pipe = client.pipeline(transaction=False)
            for period in wanted:
                pipe.hgetall(_totals_key(period))
            found: list[dict[bytes, bytes]] = await pipe.execute()
            return found

        found = await self._link.run(read)
        out: dict[tuple[str, str], Totals] = {}
        for period, table in zip(wanted, found, strict=True):
            for name, totals in _parse(table).items():
                out[(period, name)] = totals
        return out

    async def client_totals(self, day: str) -> dict[str, Totals]:
        table: dict[bytes, bytes] = await self._link.run(lambda client: client.hgetall(_clients_key(day)))
        return _parse(table)

    def close(self) -> None:
        if self._unsent:
            log.warning("%d usage rows never reached Redis (it was down until the end)", len(self._unsent))


def _add(pipe: Pipeline, rows: list[UsageRow]) -> Pipeline:
    oldest = int((time.time() - KEEP_DAYS * 86400) * 1000)
    for row in rows:
        day, month = row.periods
        increments = {
            "calls": 1,
            "errors": int(row.outcome != "answer"),
            "prompt_tokens": row.prompt_tokens or 0,
            "completion_tokens": row.completion_tokens or 0,
            "total_tokens": row.total_tokens or 0,
        }
        for period in (day, month, LIFETIME):
            for measure, amount in increments.items():
                pipe.hincrby(_totals_key(period), f"{row.provider}:{measure}", amount)
        pipe.expire(_totals_key(day), 40 * 86400)
        pipe.expire(_totals_key(month), KEEP_DAYS * 86400)
        if row.client is not None:
            for measure, amount in increments.items():
                pipe.hincrby(_clients_key(day), f"{row.client}:{measure}", amount)
            pipe.expire(_clients_key(day), 40 * 86400)
        entry: dict[Any, Any] = {name: _text(value) for name, value in zip(_ROW_FIELDS, astuple(row), strict=True)}
        entry["day"] = day
        pipe.xadd(CALLS, entry, minid=oldest, approximate=True)
    return pipe


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _parse(table: dict[bytes, bytes]) -> dict[str, Totals]:
    """`{b"fortytwo:calls": b"3", ...}` as Totals by name (provider or client)."""
    out: dict[str, Totals] = {}
    for field_name, value in table.items():
        name, measure = field_name.decode().rsplit(":", 1)
        if measure in MEASURES:
            setattr(out.setdefault(name, Totals()), measure, int(value))
    return out


async def recent_rows(link: RedisLink, first_day: str) -> list[dict[str, str]]:
    """Every row of the stream from local midnight of `first_day` on (for `swarm-inference-mcp usage`)."""
    start = int(time.mktime(time.strptime(first_day, "%Y-%m-%d")) * 1000)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await link.run(lambda client: client.xrange(CALLS, min=start))
    return [{k.decode(): v.decode() for k, v in entry.items()} for _, entry in entries]
