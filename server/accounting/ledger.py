"""What the server spends: what one upstream request costs, the totals of many, and the token budgets
that stop it. The only place any of these is computed.

**Rows.** A request's row is written twice: when the request leaves (`outcome` "sent", its
`reserved_tokens` what it may cost), and again when it ends (its outcome and the usage the provider
reported). Until then the reservation counts against every budget, so requests in flight are counted
before they are paid for; a request whose process was killed stays "sent", counted at its
reservation. Totals are kept per period and provider, and per day and client, by adding each
write's change (`change`), whatever the store: memory, the state file or Redis. Periods are local
calendar days (`2026-11-22`) and months (`2026-11`, the day's first seven characters). A row never
holds prompt or answer text, nor a key.

**The ledger.** One `Ledger` per server. `reserve` writes a request's row as it leaves the provider's
queue, after the budgets are checked with every request in flight counted at its reservation, and
`settle` when it ends. Before a retry the budgets are checked again (`check`). So a budget is
overshot by at most what is in flight at once: the requests already sent when it was reached, each
by what it costs beyond its reservation.

It keeps this process's totals since it started (for the lifetime budgets, `SWARM_MCP_TOKEN_BUDGET`
and `<PROVIDER>_TOKEN_BUDGET`) and hands every write to the `UsageStore`, which the daily and monthly
budgets read: those count every server process sharing the state file (or Redis), across restarts.
A budget that cannot be counted (the store is unusable) is no budget: while a daily or monthly
budget is set and the store has a problem, every call is refused. What the usage resource and the
metrics show of it is `server.accounting.view`'s.
"""

from __future__ import annotations

import datetime
import functools
import operator
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, fields
from typing import Literal, Protocol

import anyio

from swarm_inference_mcp.server.clients import Client
from swarm_inference_mcp.tools.errors.sentences import budget_spent, budget_uncountable, client_budget_spent

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
        """What one row counts: a call; an error once it ended other than with an answer; against a budget,
        the tokens the provider reported, or while the request is in flight (`sent`) its reservation."""
        if row.outcome == SENT:
            return cls(1, 0, row.prompt_tokens or 0, row.completion_tokens or 0, row.reserved_tokens or 0)
        return cls(
            1, int(row.outcome != "answer"), row.prompt_tokens or 0, row.completion_tokens or 0, row.total_tokens or 0
        )

    @classmethod
    def summed(cls, rows: Iterable[UsageRow], *, for_client: bool = False) -> Totals:
        out = cls()
        for row in rows:
            out.add(change(row, for_client=for_client))
        return out


MEASURES = tuple(f.name for f in fields(Totals))
measures = operator.attrgetter(*MEASURES)
"""A `Totals`' numbers in `MEASURES` order, as a tuple (`dataclasses.astuple` deep-copies each one)."""


def change(row: UsageRow, previous: UsageRow | None = None, *, for_client: bool = False) -> Totals:
    """What writing `row` adds to the totals: all of it, or, over its own earlier write, the difference.
    A shared row adds to its client's totals only (`for_client`): the providers were paid once."""
    if row.shared and not for_client:
        return Totals()
    now = Totals.of(row)
    if previous is None:
        return now
    return Totals(*map(operator.sub, measures(now), measures(Totals.of(previous))))


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


Window = Literal["lifetime", "day", "month"]


@dataclass(frozen=True)
class Budget:
    """One token budget: over which window, for one provider (or all, None), and its variable's name."""

    window: Window
    provider: str | None
    limit: int
    variable: str

    def covers(self, provider: str) -> bool:
        return self.provider is None or self.provider == provider

    def used(self, totals: dict[tuple[str, str], Totals], period: str) -> int:
        """What is used of it in `period`, from totals by (period, provider)."""
        return sum(t.total_tokens for (at, provider), t in totals.items() if at == period and self.covers(provider))

    @property
    def shared(self) -> bool:
        """Daily and monthly budgets count the state file every process shares; lifetime ones, this process."""
        return self.window != "lifetime"


def remaining(limit: int, used: int) -> int:
    return max(0, limit - used)


class Ledger:
    def __init__(self, providers: Iterable[str], budgets: list[Budget], store: UsageStore) -> None:
        self.since_start = {name: Totals() for name in providers}
        """Plain counters: a pydantic model would validate each write, on every request."""
        self.budgets = budgets
        self.store = store
        self._sending = anyio.Lock()
        """A budget check and the reservation it allows are one step in this process."""

    async def reserve(self, row: UsageRow, label: str, client: Client | None) -> None:
        """A request is about to leave: refuse it if a budget covering it is spent (with every request
        in flight counted), else put its row (outcome `sent`) on file. Raises `BudgetError`/`ConfigError`
        before anything is written; once written, it returns (the store bounds the wait)."""
        async with self._sending:
            await self.check(row.provider, label, client)
            pending = self._record(row, None)
        await _written(pending)

    async def shared(self, row: UsageRow) -> None:
        """A client was served another client's answer: its own row, counted for it alone (`rows.change`)."""
        await _written(self._record(row, None))

    async def settle(self, row: UsageRow, reserved: UsageRow) -> None:
        """The request has ended: its row now says how, and what it cost (whatever cancels the caller)."""
        await _written(self._record(row, reserved))

    def _record(self, row: UsageRow, previous: UsageRow | None) -> Awaitable[None] | None:
        self.since_start[row.provider].add(change(row, previous))  # a shared row adds nothing here
        if self.store.problem is not None and not isinstance(self.store, MemoryUsageStore):
            self.store = MemoryUsageStore(self.store.problem)  # keep counting, in memory now
        return self.store.record(row, previous)

    async def check(self, provider: str, label: str, client: Client | None = None) -> None:
        """Refuse a new upstream request (or a retry) once a budget covering `provider`, or the client's
        own, is spent. Raises `BudgetError`, or `ConfigError` when a shared budget is set but cannot be
        counted."""
        shared = []
        for budget in self.budgets:
            if not budget.covers(provider):
                continue
            if self.counted_by_store(budget):
                shared.append(budget)
            else:
                self._refuse_if_spent(budget, self.lifetime_used(budget), label)
        if client is not None and client.daily_tokens is not None:
            await self._check_client(client, label)
        if not shared:
            return
        totals = await self._read_shared(label)
        periods = self.periods()
        for budget in shared:
            self._refuse_if_spent(budget, budget.used(totals, periods[budget.window]), label)

    def counted_by_store(self, budget: Budget) -> bool:
        """Daily and monthly budgets count the store; lifetime ones too when it keeps all-time totals (Redis)."""
        return budget.shared or self.store.counts_lifetime

    def periods(self) -> dict[Window, str]:
        day, month = periods_of(time.time())
        return {"day": day, "month": month, "lifetime": LIFETIME}

    async def _check_client(self, client: Client, label: str) -> None:
        if self.store.problem is not None:
            raise budget_uncountable(label, self.store.problem, "a client budget")
        try:
            used = (await self.store.client_totals(periods_of(time.time())[0])).get(client.name, Totals()).total_tokens
        except StateError as err:
            raise budget_uncountable(label, str(err), "a client budget") from None
        if client.daily_tokens is not None and used >= client.daily_tokens:
            raise client_budget_spent(label, client.name, client.daily_tokens, used)

    async def _read_shared(self, label: str) -> dict[tuple[str, str], Totals]:
        problem = self.store.problem
        if problem is None:
            try:
                return await self.store.totals(set(self.periods().values()))
            except StateError as err:
                problem = str(err)
        what = "a token budget" if self.store.counts_lifetime else "a daily or monthly token budget"
        raise budget_uncountable(label, problem, what)

    def lifetime_used(self, budget: Budget) -> int:
        if budget.provider is None:
            return sum(usage.total_tokens for usage in self.since_start.values())
        return self.since_start[budget.provider].total_tokens

    def _refuse_if_spent(self, budget: Budget, used: int, label: str) -> None:
        if used < budget.limit:
            return
        whose = "" if budget.provider is None else f" for {label}"
        if budget.window == "lifetime" and self.store.counts_lifetime:
            what = "lifetime token budget"
            reset = "every instance sharing Redis counts against it; raise it to call again"
        elif budget.window == "lifetime":
            what, reset = "lifetime token budget", "raise it or restart the server to call again"
        elif budget.window == "day":
            what, reset = "daily token budget", "it resets at midnight, local time"
        else:
            what, reset = "monthly token budget", f"it resets on {_next_month()}, local time"
        raise budget_spent(label, what + whose, budget.limit, budget.variable, used=used, reset=reset)


async def _written(pending: Awaitable[None] | None) -> None:
    """Until the store has the write, whatever cancels the caller (each store bounds how long that is)."""
    if pending is not None:
        with anyio.CancelScope(shield=True):
            await pending


def _next_month() -> str:
    today = datetime.date.today()
    return (today.replace(day=28) + datetime.timedelta(days=4)).replace(day=1).isoformat()
