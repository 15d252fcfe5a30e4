"""What the server has spent since it started, per provider, and the optional token budgets.

One `Ledger` per server, filled by `Jobs` once per upstream job: five callers that share one
in-flight request count as one call, and a cached answer counts as none. A budget is checked
before a new job starts, so a job already running may overshoot it by its own tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

from tools.errors import BudgetError
from tools.models import ProviderUsage, SessionUsage, Usage


class Ledger:
    def __init__(self, provider_budgets: Mapping[str, int | None], token_budget: int | None) -> None:
        """`provider_budgets` names every provider, with its own budget or None; `token_budget` is for all."""
        self._usage = {name: ProviderUsage(token_budget=budget) for name, budget in provider_budgets.items()}
        self._budget = token_budget

    def record(self, provider: str, usage: Usage | None, *, failed: bool) -> None:
        entry = self._usage[provider]
        entry.calls += 1
        entry.errors += int(failed)
        if usage is not None:
            entry.prompt_tokens += usage.prompt_tokens
            entry.completion_tokens += usage.completion_tokens
            entry.total_tokens += usage.total_tokens

    @property
    def total_tokens(self) -> int:
        return sum(u.total_tokens for u in self._usage.values())

    def check_budget(self, provider: str, label: str) -> None:
        """Refuse a new upstream call once the provider's budget or the total budget is spent."""
        own = self._usage[provider]
        for budget, used, variable in (
            (own.token_budget, own.total_tokens, f"{provider.upper()}_TOKEN_BUDGET"),
            (self._budget, self.total_tokens, "SWARM_MCP_TOKEN_BUDGET"),
        ):
            if budget is not None and used >= budget:
                raise BudgetError(
                    label,
                    f"the token budget of {budget} tokens ({variable}) is spent ({used} used); "
                    "raise it or restart the server to call again.",
                )

    def snapshot(self) -> SessionUsage:
        total = self.total_tokens
        providers = {
            name: usage.model_copy(
                update={
                    "budget_remaining": None
                    if usage.token_budget is None
                    else max(0, usage.token_budget - usage.total_tokens)
                }
            )
            for name, usage in self._usage.items()
        }
        return SessionUsage(
            providers=providers,
            total_tokens=total,
            token_budget=self._budget,
            budget_remaining=None if self._budget is None else max(0, self._budget - total),
        )
