"""What the server tells its monitoring as it works: the `Observer` interface (over stdio, where nothing
is served, there is none). The Prometheus one is `server.gateway.metrics`.

An observer is told of events only, never of text: a tool call's outcome, an upstream request's
usage row, a refusal by a limit. What can be read at any time (jobs, sessions, budgets) it reads
when it is scraped.
"""

from __future__ import annotations

from typing import Protocol

from swarm_inference_mcp.server.accounting.ledger import UsageRow


class Observer(Protocol):
    def request_done(self, row: UsageRow, first_chunk_s: float | None) -> None:
        """One upstream request that left, as the ledger counts it; `first_chunk_s`, for a streamed one,
        is how long its first chunk took to arrive after it was sent."""

    def call_done(self, tool: str, outcome: str, client: str | None) -> None:
        """A tool call returned: `answer`, `handle`, `task`, or its error's kind."""

    def refused(self, limit: str, client: str | None) -> None:
        """A client was refused by one of its limits (`max_jobs_per_client`, `max_sessions_per_client`)."""
