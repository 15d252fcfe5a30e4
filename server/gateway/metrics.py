"""The gateway's Prometheus metrics: what it counts as it works, and what it reads when scraped.

Imported by the HTTP transport only: over stdio nothing is served, and `prometheus_client` is never
loaded. Every series is in this module's own registry (no process-wide state), and no label ever
holds a token, a prompt or a job id: tool, provider, outcome (`answer`, `handle`, `task` or an error
kind), client name, budget variable. The list of series with their labels is in `docs/metrics.md`.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from swarm_inference_mcp.server.accounting import view
from swarm_inference_mcp.server.accounting.ledger import StateError, UsageRow
from swarm_inference_mcp.server.clients import Client
from swarm_inference_mcp.server.telemetry import DROPPED

if TYPE_CHECKING:
    from swarm_inference_mcp.server.calls import AppState

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800)
"""Swarm calls take seconds to minutes, up to the largest deadline a call may ask for (30 minutes)."""


def _who(client: str | None) -> str:
    return client or ""


class PrometheusMetrics:
    """An `Observer` (`server.observe`) that counts into Prometheus series, and renders them when scraped."""

    def __init__(self, *, redis: bool = False) -> None:
        """`redis`: whether instances share Redis (only then is there a `swarm_mcp_redis_up`)."""
        self.registry = registry = CollectorRegistry()
        self._calls = Counter(
            "swarm_mcp_tool_calls", "Tool calls by how they ended.", ["tool", "outcome", "client"], registry=registry
        )
        self._requests = Counter(
            "swarm_mcp_upstream_requests",
            "Upstream requests that were sent, by how they ended.",
            ["provider", "outcome", "client"],
            registry=registry,
        )
        self._retries = Counter(
            "swarm_mcp_upstream_retries", "Upstream attempts after the first.", ["provider"], registry=registry
        )
        self._refusals = Counter(
            "swarm_mcp_refusals", "Clients refused by one of their limits.", ["limit", "client"], registry=registry
        )
        self._duration = Histogram(
            "swarm_mcp_upstream_request_duration_seconds",
            "Wall time of an upstream request, retries included.",
            ["provider"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self._first_chunk = Histogram(
            "swarm_mcp_upstream_first_chunk_seconds",
            "Time from sending a streamed request to its first chunk.",
            ["provider"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self._spans_dropped = Counter(
            "swarm_mcp_spans_dropped", "Spans the trace exporter dropped: its collector fell behind.", registry=registry
        )
        self._dropped_seen = 0
        self._tokens = Counter(
            "swarm_mcp_tokens", "Tokens the upstreams reported.", ["provider", "client", "type"], registry=registry
        )
        labels = ["budget", "window", "provider", "client"]
        self._limit = Gauge("swarm_mcp_budget_limit_tokens", "Each token budget's limit.", labels, registry=registry)
        self._remaining = Gauge(
            "swarm_mcp_budget_remaining_tokens", "What is left of each token budget.", labels, registry=registry
        )
        self._jobs = Gauge(
            "swarm_mcp_jobs_running",
            "Jobs running on this instance (a task is a job), per provider they ask.",
            ["provider", "client"],
            registry=registry,
        )
        self._queued = Gauge(
            "swarm_mcp_requests_queued",
            "Upstream requests waiting for a place under their provider's concurrency cap.",
            ["provider", "client"],
            registry=registry,
        )
        self._sessions = Gauge("swarm_mcp_sessions", "Open MCP sessions per client.", ["client"], registry=registry)
        self._store_up = Gauge(
            "swarm_mcp_usage_store_up", "1 while usage is recorded and readable, else 0.", registry=registry
        )
        self._backlog = Gauge(
            "swarm_mcp_usage_backlog_rows",
            "Usage rows recorded but not yet stored (the writer's pipe; kept while Redis is down).",
            registry=registry,
        )
        self._redis_up = (
            Gauge("swarm_mcp_redis_up", "1 while Redis answers, else 0.", registry=registry) if redis else None
        )

    # What the server tells as it works (`Observer`).

    def request_done(self, row: UsageRow, first_chunk_s: float | None) -> None:
        client = _who(row.client)
        self._requests.labels(row.provider, row.outcome, client).inc()
        if row.attempts is not None and row.attempts > 1:
            self._retries.labels(row.provider).inc(row.attempts - 1)
        self._duration.labels(row.provider).observe(row.latency_ms / 1000)
        if first_chunk_s is not None:
            self._first_chunk.labels(row.provider).observe(first_chunk_s)
        if row.prompt_tokens:
            self._tokens.labels(row.provider, client, "prompt").inc(row.prompt_tokens)
        if row.completion_tokens:
            self._tokens.labels(row.provider, client, "completion").inc(row.completion_tokens)

    def call_done(self, tool: str, outcome: str, client: str | None) -> None:
        self._calls.labels(tool, outcome, _who(client)).inc()

    def refused(self, limit: str, client: str | None) -> None:
        self._refusals.labels(limit, _who(client)).inc()

    # What a scrape reads.

    async def render(self, state: AppState | None, sessions: Mapping[str, int], clients: list[Client]) -> bytes:
        """The metrics in Prometheus' text format, with what can be read now read afresh."""
        _replace(self._sessions, {(name,): count for name, count in sessions.items()})
        self._spans_dropped.inc(DROPPED.count - self._dropped_seen)
        self._dropped_seen = DROPPED.count
        if state is not None:
            await self._read(state, clients)
        return generate_latest(self.registry)

    async def _read(self, state: AppState, clients: list[Client]) -> None:
        running: Tally[tuple[str, str]] = Tally()
        for job in state.jobs.table.running_jobs():
            for provider in job.providers:
                running[(provider, _who(job.client))] += 1
        _replace(self._jobs, running)
        queued = state.requests.upstream.queued()
        _replace(self._queued, {(provider, _who(client)): n for (provider, client), n in queued.items()})
        ledger = state.requests.ledger
        store = ledger.store
        self._backlog.set(store.backlog)
        if self._redis_up is not None:
            from swarm_inference_mcp.server.scaleout.usage import RedisUsageStore  # noqa: PLC0415 - only with Redis

            if isinstance(store, RedisUsageStore):
                self._redis_up.set(1 if store.reachable else 0)
        limits: dict[tuple[str, ...], float] = {}
        remaining: dict[tuple[str, ...], float] = {}
        try:
            for budget, used in await view.readings(ledger):
                key = (budget.variable, budget.window, budget.provider or "all", "")
                limits[key], remaining[key] = budget.limit, max(0, budget.limit - used)
            for client in clients:
                if client.daily_tokens is not None:
                    usage = await view.client_usage(ledger, client)
                    key = ("daily_tokens", "day", "all", client.name)
                    limits[key], remaining[key] = client.daily_tokens, usage["remaining"]
        except StateError as err:
            log.debug("metrics: budgets not read: %s", err)
            self._store_up.set(0)
        else:
            self._store_up.set(0 if store.problem is not None else 1)
        _replace(self._limit, limits)
        _replace(self._remaining, remaining)


def _replace(gauge: Gauge, values: Mapping[Any, float]) -> None:
    """Set a labelled gauge to exactly `values` (by label tuple): a label set no longer there (a client
    gone) goes."""
    gauge.clear()
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
