"""What the server spends, and the token budgets that stop it.

One `Ledger` per server. Each upstream request is written to it twice (`server.accounting.rows`):
`reserve` as it leaves the provider's queue, after the budgets are checked with every request in
flight counted at its reservation, and `settle` when it ends. Before a retry the budgets are checked
again (`check`). So a budget is overshot by at most what is in flight at once: the requests already
sent when it was reached, each by what it costs beyond its reservation.

It keeps this process's totals since it started (for the lifetime budgets, `SWARM_MCP_TOKEN_BUDGET`
and `<PROVIDER>_TOKEN_BUDGET`) and hands every write to the `UsageStore`, which the daily and monthly
budgets read: those count every server process sharing the state file (or Redis), across restarts.
A budget that cannot be counted (the store is unusable) is no budget: while a daily or monthly
budget is set and the store has a problem, every call is refused.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Awaitable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import anyio

from swarm_inference_mcp.server.accounting.rows import (
    LIFETIME,
    MemoryUsageStore,
    StateError,
    Totals,
    UsageRow,
    UsageStore,
    change,
    periods_of,
)
from swarm_inference_mcp.server.clients import Client
from swarm_inference_mcp.tools.errors.sentences import budget_spent, budget_uncountable, client_budget_spent
from swarm_inference_mcp.tools.models import ProviderUsage, SessionUsage

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
        self._since_start = {name: Totals() for name in providers}
        """Plain counters: a pydantic model would validate each write, on every request."""
        self._budgets = budgets
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
        self._since_start[row.provider].add(change(row, previous))  # a shared row adds nothing here
        if self.store.problem is not None and not isinstance(self.store, MemoryUsageStore):
            self.store = MemoryUsageStore(self.store.problem)  # keep counting, in memory now
        return self.store.record(row, previous)

    async def check(self, provider: str, label: str, client: Client | None = None) -> None:
        """Refuse a new upstream request (or a retry) once a budget covering `provider`, or the client's
        own, is spent. Raises `BudgetError`, or `ConfigError` when a shared budget is set but cannot be
        counted."""
        shared = []
        for budget in self._budgets:
            if not budget.covers(provider):
                continue
            if self._counted_by_store(budget):
                shared.append(budget)
            else:
                self._refuse_if_spent(budget, self._lifetime_used(budget), label)
        if client is not None and client.daily_tokens is not None:
            await self._check_client(client, label)
        if not shared:
            return
        totals = await self._read_shared(label)
        periods = self._periods()
        for budget in shared:
            self._refuse_if_spent(budget, budget.used(totals, periods[budget.window]), label)

    def _counted_by_store(self, budget: Budget) -> bool:
        """Daily and monthly budgets count the store; lifetime ones too when it keeps all-time totals (Redis)."""
        return budget.shared or self.store.counts_lifetime

    def _periods(self) -> dict[Window, str]:
        day, month = periods_of(time.time())
        return {"day": day, "month": month, "lifetime": LIFETIME}

    def snapshot(self) -> SessionUsage:
        """This process's totals since it started, with its lifetime budgets."""
        lifetime = {b.provider: b.limit for b in self._budgets if b.window == "lifetime"}
        providers = {}
        for name, usage in self._since_start.items():
            own = lifetime.get(name)
            left = None if own is None else remaining(own, usage.total_tokens)
            providers[name] = ProviderUsage(**asdict(usage), token_budget=own, budget_remaining=left)
        total = sum(usage.total_tokens for usage in self._since_start.values())
        budget = lifetime.get(None)
        return SessionUsage(
            providers=providers,
            total_tokens=total,
            token_budget=budget,
            budget_remaining=None if budget is None else remaining(budget, total),
        )

    async def shared_usage(self) -> dict[str, Any]:
        """Today's and this month's totals from the store (every process sharing it), and the budgets left."""
        periods = self._periods()
        sections: list[tuple[str, Window]] = [("today", "day"), ("this_month", "month")]
        if self.store.counts_lifetime:
            sections.append(("all_time", "lifetime"))
        try:
            totals = await self.store.totals(periods[window] for _, window in sections)
        except StateError as err:
            return {"problem": str(err)}
        out: dict[str, Any] = {}
        for key, window in sections:
            period = periods[window]
            providers = {p: vars(t) for (at, p), t in sorted(totals.items()) if at == period}
            budgets = [
                {
                    "variable": b.variable,
                    "limit": b.limit,
                    "used": (used := b.used(totals, period)),
                    "remaining": remaining(b.limit, used),
                }
                for b in self._budgets
                if b.window == window and self._counted_by_store(b)
            ]
            out[key] = {
                "period": period,
                "providers": providers,
                "total_tokens": sum(t.total_tokens for (at, _), t in totals.items() if at == period),
                "budgets": budgets,
            }
        if self.store.problem is not None:
            out["problem"] = self.store.problem
        return out

    async def readings(self) -> list[tuple[Budget, int]]:
        """Each budget with the tokens used of it now, as a budget check counts them. Raises `StateError`."""
        periods = self._periods()
        counted = {periods[b.window] for b in self._budgets if self._counted_by_store(b)}
        totals = await self.store.totals(counted) if counted else {}
        return [
            (b, b.used(totals, periods[b.window]) if self._counted_by_store(b) else self._lifetime_used(b))
            for b in self._budgets
        ]

    async def client_usage(self, client: Client) -> dict[str, Any]:
        """One HTTP client's own spend today (every process sharing the state file), and its budget."""
        day = periods_of(time.time())[0]
        totals = (await self.store.client_totals(day)).get(client.name, Totals())
        limit = client.daily_tokens
        return {
            "name": client.name,
            "today": vars(totals),
            "daily_tokens": limit,
            "remaining": None if limit is None else remaining(limit, totals.total_tokens),
        }

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
                return await self.store.totals(set(self._periods().values()))
            except StateError as err:
                problem = str(err)
        what = "a token budget" if self.store.counts_lifetime else "a daily or monthly token budget"
        raise budget_uncountable(label, problem, what)

    def _lifetime_used(self, budget: Budget) -> int:
        if budget.provider is None:
            return sum(usage.total_tokens for usage in self._since_start.values())
        return self._since_start[budget.provider].total_tokens

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
