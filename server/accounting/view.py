"""What the usage resource (`swarm://usage`) and the metrics show of a `Ledger`: this process's totals,
the store's for today, this month (and all time, with Redis), and each budget with what is left.

Every figure is the ledger's own (`Budget.used`, `remaining`): nothing here counts differently.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from swarm_inference_mcp.server.accounting.ledger import (
    Budget,
    Ledger,
    StateError,
    Totals,
    Window,
    periods_of,
    remaining,
)
from swarm_inference_mcp.server.clients import Client
from swarm_inference_mcp.tools.models import ProviderUsage, SessionUsage


def snapshot(ledger: Ledger) -> SessionUsage:
    """This process's totals since it started, with its lifetime budgets."""
    lifetime = {b.provider: b.limit for b in ledger.budgets if b.window == "lifetime"}
    providers = {}
    for name, usage in ledger.since_start.items():
        own = lifetime.get(name)
        left = None if own is None else remaining(own, usage.total_tokens)
        providers[name] = ProviderUsage(**asdict(usage), token_budget=own, budget_remaining=left)
    total = sum(usage.total_tokens for usage in ledger.since_start.values())
    budget = lifetime.get(None)
    return SessionUsage(
        providers=providers,
        total_tokens=total,
        token_budget=budget,
        budget_remaining=None if budget is None else remaining(budget, total),
    )


async def shared_usage(ledger: Ledger) -> dict[str, Any]:
    """Today's and this month's totals from the store (every process sharing it), and the budgets left."""
    periods = ledger.periods()
    sections: list[tuple[str, Window]] = [("today", "day"), ("this_month", "month")]
    if ledger.store.counts_lifetime:
        sections.append(("all_time", "lifetime"))
    try:
        totals = await ledger.store.totals(periods[window] for _, window in sections)
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
            for b in ledger.budgets
            if b.window == window and ledger.counted_by_store(b)
        ]
        out[key] = {
            "period": period,
            "providers": providers,
            "total_tokens": sum(t.total_tokens for (at, _), t in totals.items() if at == period),
            "budgets": budgets,
        }
    if ledger.store.problem is not None:
        out["problem"] = ledger.store.problem
    return out


async def readings(ledger: Ledger) -> list[tuple[Budget, int]]:
    """Each budget with the tokens used of it now, as a budget check counts them. Raises `StateError`."""
    periods = ledger.periods()
    counted = {periods[b.window] for b in ledger.budgets if ledger.counted_by_store(b)}
    totals = await ledger.store.totals(counted) if counted else {}
    return [
        (b, b.used(totals, periods[b.window]) if ledger.counted_by_store(b) else ledger.lifetime_used(b))
        for b in ledger.budgets
    ]


async def client_usage(ledger: Ledger, client: Client) -> dict[str, Any]:
    """One HTTP client's own spend today (every process sharing the state file), and its budget."""
    day = periods_of(time.time())[0]
    totals = (await ledger.store.client_totals(day)).get(client.name, Totals())
    limit = client.daily_tokens
    return {
        "name": client.name,
        "today": vars(totals),
        "daily_tokens": limit,
        "remaining": None if limit is None else remaining(limit, totals.total_tokens),
    }
