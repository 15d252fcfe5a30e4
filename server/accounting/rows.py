"""What one upstream request costs, and the totals of many: the only place either is computed.

A request's row is written twice: when the request leaves (`outcome` "sent", its `reserved_tokens`
what it may cost), and again when it ends (its outcome and the usage the provider reported). Until
then the reservation counts against every budget, so requests in flight are counted before they
are paid for; a request whose process was killed stays "sent", counted at its reservation. Totals
are kept per period and provider, and per day and client, by adding each write's change (`change`),
whatever the store: memory, the state file or Redis.

Periods are local calendar days (`2026-11-22`) and months (`2026-11`, the day's first seven
characters). A row never holds prompt or answer text, nor a key.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, fields
from typing import Protocol

SENT = "sent"
"""The outcome of a row whose request left and has not ended yet (or never will: its process died)."""
LIFETIME = "all"
"""The period that never ends, kept by stores whose totals count every process (`counts_lifetime`)."""


@dataclass(frozen=True)
class UsageRow:
    """One upstream request, as recorded."""

    at: float
    tool: str | None
    provider: str
    model: str | None
    outcome: str
    """`answer`, `sent` (not ended), or the error kind."""
    status: int | None
    attempts: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    latency_ms: int
    job_id: str | None
    client: str | None = None
    ref: str | None = None
    """The same for both writes of one request, so that the second finds the first."""
    reserved_tokens: int | None = None
    """What the request was counted at while it was in flight: its prompt's size and its `max_tokens`."""
    shared: bool = False
    """This client joined another client's request (`SWARM_MCP_SHARE_BETWEEN_CLIENTS`): the tokens are
    its own usage, not spent again, so they count for the client and not in the providers' totals."""

    @property
    def periods(self) -> tuple[str, str]:
        return periods_of(self.at)

    @property
    def settled(self) -> bool:
        return self.outcome != SENT

    @property
    def error(self) -> bool:
        return self.settled and self.outcome != "answer"

    @property
    def tokens(self) -> int:
        """What the row counts against a budget: the usage reported, or while in flight its reservation."""
        return (self.total_tokens or 0) if self.settled else (self.reserved_tokens or 0)


COLUMNS = tuple(f.name for f in fields(UsageRow))
"""The row's fields, in order: the state file's columns and the Redis stream's fields."""


@dataclass
class Totals:
    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, change: Totals) -> None:
        self.calls += change.calls
        self.errors += change.errors
        self.prompt_tokens += change.prompt_tokens
        self.completion_tokens += change.completion_tokens
        self.total_tokens += change.total_tokens

    @classmethod
    def of(cls, row: UsageRow) -> Totals:
        return cls(1, int(row.error), row.prompt_tokens or 0, row.completion_tokens or 0, row.tokens)

    @classmethod
    def summed(cls, rows: Iterable[UsageRow], *, for_client: bool = False) -> Totals:
        out = cls()
        for row in rows:
            out.add(change(row, for_client=for_client))
        return out


MEASURES = tuple(f.name for f in fields(Totals))


def change(row: UsageRow, previous: UsageRow | None = None, *, for_client: bool = False) -> Totals:
    """What writing `row` adds to the totals: all of it, or, over its own earlier write, the difference.
    A shared row adds to its client's totals only (`for_client`): the providers were paid once."""
    if row.shared and not for_client:
        return Totals()
    now = Totals.of(row)
    if previous is None:
        return now
    before = Totals.of(previous)
    return Totals(*(getattr(now, name) - getattr(before, name) for name in MEASURES))


def rows_in(rows: Iterable[UsageRow]) -> int:
    """How many requests some writes are of (a request's two writes are one row)."""
    return len({row.ref if row.ref is not None else id(row) for row in rows})


def periods_of(at: float) -> tuple[str, str]:
    """The local day and month of a moment: `("2026-11-22", "2026-11")`."""
    return _periods_of_minute(int(at // 60))


@functools.lru_cache(maxsize=4)  # every row asks; a local day starts on a whole minute in every time zone
def _periods_of_minute(minute: int) -> tuple[str, str]:
    day = time.strftime("%Y-%m-%d", time.localtime(minute * 60))
    return day, day[:7]


class StateError(Exception):
    """The usage cannot be read or written; the message is one sentence naming where and the problem."""


class UsageStore(Protocol):
    problem: str | None
    """Why the store no longer records (a sentence), or None while it works."""
    counts_lifetime: bool
    """Whether the store keeps all-time totals (period `all`) of every process sharing it: then the
    lifetime budgets count those instead of this process's since it started."""

    @property
    def backlog(self) -> int:
        """Writes made here that the store does not hold yet (waiting for a lock; kept while Redis is down)."""

    def record(self, row: UsageRow, previous: UsageRow | None = None) -> Awaitable[None] | None:
        """Write a row (over its `previous` write, if any). When an awaitable is returned, the write counts
        for every process once it is done. Never raises: a failure sets `problem`."""

    async def totals(self, periods: Iterable[str]) -> dict[tuple[str, str], Totals]:
        """Totals by (period, provider) for the given periods (days or months). Raises `StateError`."""

    async def client_totals(self, day: str) -> dict[str, Totals]:
        """Totals by HTTP client for one day. Raises `StateError`."""

    def close(self) -> None: ...


class MemoryUsageStore:
    """This process's usage only: what `SWARM_MCP_STATE_DB=off`, or a state file that cannot be used, leaves."""

    counts_lifetime = False
    backlog = 0

    def __init__(self, problem: str | None = None) -> None:
        self.problem = problem
        self._totals: dict[tuple[str, str], Totals] = {}
        self._clients: dict[tuple[str, str], Totals] = {}

    def record(self, row: UsageRow, previous: UsageRow | None = None) -> None:
        for period in row.periods:
            self._totals.setdefault((period, row.provider), Totals()).add(change(row, previous))
        if row.client is not None:
            self._clients.setdefault((row.periods[0], row.client), Totals()).add(change(row, previous, for_client=True))

    async def client_totals(self, day: str) -> dict[str, Totals]:
        return {client: totals for (at, client), totals in self._clients.items() if at == day}

    async def totals(self, periods: Iterable[str]) -> dict[tuple[str, str], Totals]:
        wanted = set(periods)
        return {key: totals for key, totals in self._totals.items() if key[0] in wanted}

    def close(self) -> None:
        pass
