"""Usage kept in Redis, for several instances that share one budget (`SWARM_MCP_REDIS_URL`).

Per write of a row (`server.accounting.ledger`: as a request leaves, and when it ends), one script
(`_RECORD`, a single round trip, atomic like every Redis script) adds the change Python computed to
the totals of its day, its month and all time (hashes `swarm-mcp:totals:<period>`, fields
`<provider>:<measure>`) and to its HTTP client's day (`swarm-mcp:clients:<day>`); each write is
appended to the stream `swarm-mcp:calls` (trimmed to `KEEP_DAYS`), which `swarm-inference-mcp usage`
reads, taking a request's last write (a killed instance's requests stay there as they left, `sent`).
N instances adding at once never lose an increment. The script stores; it decides nothing.

When Redis is down, rows wait in memory (at most `MAX_UNSENT`) and go with the next row that gets
through, so the shared totals catch up once Redis is back. Reads fail with `RedisDown` meanwhile:
the ledger then refuses calls while a budget is set (it cannot be counted) and goes on otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from swarm_inference_mcp.server.accounting.ledger import (
    COLUMNS,
    LIFETIME,
    MEASURES,
    Totals,
    UsageRow,
    change,
    measures,
    rows_in,
)
from swarm_inference_mcp.server.scaleout.link import PREFIX, RedisDown, RedisLink

log = logging.getLogger(__name__)

KEEP_DAYS = 400
MAX_UNSENT = 10_000
Write = tuple[UsageRow, UsageRow | None]
"""A row, and its earlier write when this one settles it."""
CALLS = PREFIX + "calls"


_RECORD = """
local measures = {'calls', 'errors', 'prompt_tokens', 'completion_tokens', 'total_tokens'}
for k = 1, 3 do
  for i, measure in ipairs(measures) do
    redis.call('HINCRBY', KEYS[k], ARGV[1] .. ':' .. measure, ARGV[2 + i])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[9])
if ARGV[2] ~= '' then
  for i, measure in ipairs(measures) do
    redis.call('HINCRBY', KEYS[4], ARGV[2] .. ':' .. measure, ARGV[10 + i])
  end
  redis.call('EXPIRE', KEYS[4], ARGV[8])
end
redis.call('XADD', KEYS[5], 'MINID', '~', ARGV[10], '*', unpack(ARGV, 16))
return 1
"""
"""KEYS: day, month and all-time totals, the client's day, the stream. ARGV: provider, client ('' for
none), the five measures of the totals, day and month key lifetimes (s), the stream's oldest id, the
five measures of the client's day, then the row's fields and values (appended to the stream)."""
DAY_KEY_S = 40 * 86400


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
        self._unsent: list[Write] = []
        self._record = link.client.register_script(_RECORD)

    @property
    def where(self) -> str:
        return self._link.where

    @property
    def reachable(self) -> bool:
        """Whether Redis answered the last command (it is tried again every second while it does not)."""
        return self._link.problem is None

    @property
    def backlog(self) -> int:
        return rows_in(row for row, _ in self._unsent)

    def prepare(self) -> None:
        pass

    async def record(self, row: UsageRow, previous: UsageRow | None = None) -> None:
        rows = [*self._unsent, (row, previous)]
        try:
            await self._link.run(lambda client: self._send(client, rows))
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

    async def _send(self, client: Any, rows: list[Write]) -> None:
        oldest = int((time.time() - KEEP_DAYS * 86400) * 1000)
        if len(rows) == 1:
            keys, args = _script_args(*rows[0], oldest)
            await self._record(keys=keys, args=args)
            return
        pipe = client.pipeline(transaction=True)  # rows kept while Redis was down: all or none
        for row, previous in rows:
            keys, args = _script_args(row, previous, oldest)
            await self._record(keys=keys, args=args, client=pipe)
        await pipe.execute()

    def close(self) -> None:
        if self._unsent:
            log.warning("%d usage rows never reached Redis (it was down until the end)", len(self._unsent))


def _script_args(row: UsageRow, previous: UsageRow | None, oldest_ms: int) -> tuple[list[str], list[Any]]:
    day, month = row.periods
    keys = [_totals_key(day), _totals_key(month), _totals_key(LIFETIME), _clients_key(day), CALLS]
    totals = measures(change(row, previous))
    client_measures = measures(change(row, previous, for_client=True))
    fields: list[Any] = ["day", day]
    for name in COLUMNS:
        fields += [name, _text(getattr(row, name))]
    args = [row.provider, row.client or "", *totals, DAY_KEY_S, KEEP_DAYS * 86400, oldest_ms, *client_measures]
    return keys, [*args, *fields]


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
    rows: dict[str, dict[str, str]] = {}
    for stream_id, entry in entries:  # a request's row as it left, then as it ended: the last one stands
        row = {k.decode(): v.decode() for k, v in entry.items()}
        rows[row.get("ref") or stream_id.decode()] = row
    return list(rows.values())
