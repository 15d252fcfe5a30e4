"""What the server has spent since it started, per provider, and the optional token budget.

One `Ledger` per server, owned by `Upstream`, counted once per upstream job: five callers that
share one in-flight request count as one call, and a cached answer counts as none.
"""

from __future__ import annotations

from tools.errors import BudgetError
from tools.models import ProviderUsage, SessionUsage, Usage


class Ledger:
    def __init__(self, providers: list[str], token_budget: int | None) -> None:
        self._usage = {name: ProviderUsage() for name in providers}
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

    def check_budget(self, label: str) -> None:
        """Refuse a new upstream call once the budget is spent."""
        if self._budget is not None and self.total_tokens >= self._budget:
            raise BudgetError(
                label,
                f"the token budget of {self._budget} tokens (SWARM_MCP_TOKEN_BUDGET) is spent "
                f"({self.total_tokens} used); raise it or restart the server to call again.",
            )

    def snapshot(self) -> SessionUsage:
        total = self.total_tokens
        return SessionUsage(
            providers={name: usage.model_copy() for name, usage in self._usage.items()},
            total_tokens=total,
            token_budget=self._budget,
            budget_remaining=None if self._budget is None else max(0, self._budget - total),
        )
