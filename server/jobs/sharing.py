"""A job's answer, and never paying twice for one upstream request: each distinct request body runs
once at a time.

`answer` is what a job runs (`server.jobs.runner`): one provider's answer, or `ask_both`'s side by
side, in our own words (`server.jobs.outcome`).

A request is keyed by provider and the exact body. The first caller runs it, in its own task (the
server's job handles give each tool call a server-owned task already, so a second hop would only
cost time); callers with the same key that arrive meanwhile wait for that answer instead of
sending another request. Should the running caller be cancelled before an answer arrived (its
request is aborted with it), a waiting caller sends the request itself. With `SWARM_MCP_CACHE_TTL`
a finished answer also serves exact repeats for a while. Each request is counted once in the
ledger, and a new one is refused once a token budget is spent.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from swarm_inference_mcp.server.accounting.ledger import SENT, Ledger, UsageRow
from swarm_inference_mcp.server.clients import Client
from swarm_inference_mcp.server.jobs.outcome import Answered, Failed, Failure, Outcome, SideFailed, Sides, Trace
from swarm_inference_mcp.server.observe import Observer
from swarm_inference_mcp.tools.completion import Completion
from swarm_inference_mcp.tools.connection import request_span
from swarm_inference_mcp.tools.errors.tree import CallError
from swarm_inference_mcp.tools.models import Answer
from swarm_inference_mcp.tools.progress import Listeners, ProgressFn, wait_with_progress
from swarm_inference_mcp.tools.upstream import Upstream

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    """One upstream request in flight, and what its waiting callers need."""

    streams: bool
    client: str | None
    """Whose request it is: another client joining it is accounted as sharing it."""
    done: anyio.Event = field(default_factory=anyio.Event)
    listeners: Listeners = field(default_factory=Listeners)
    result: Completion | None = None
    error: CallError | None = None


@dataclass(frozen=True)
class Origin:
    """Who asked, for the ledger: the tool and its job."""

    tool: str | None = None
    job_id: str | None = None
    client: Client | None = None
    """The HTTP client that asked, when the tokens file names clients."""


@dataclass(frozen=True)
class Ask:
    """One upstream request to make: the provider and the exact body, keyed once (`RequestSharing.ask`)."""

    provider: str
    body: dict[str, Any]
    key: str


class RequestSharing:
    """Sends each distinct upstream request once at a time (see the module docstring), and counts it."""

    def __init__(
        self,
        upstream: Upstream,
        ledger: Ledger,
        cache_ttl_s: float = 0.0,
        observer: Observer | None = None,
        *,
        between_clients: bool = False,
    ) -> None:
        self.upstream = upstream
        self.ledger = ledger
        self.observer = observer
        self._cache_ttl_s = cache_ttl_s
        self._between_clients = between_clients
        self._running: dict[str, _Request] = {}
        self._cache: dict[str, tuple[float, Completion, str | None]] = {}

    def ask(self, provider: str, body: dict[str, Any], client: Client | None) -> Ask:
        """The one definition of the same question: the same provider and exact body, from the same client,
        or from any client where the operator shares between them (`SWARM_MCP_SHARE_BETWEEN_CLIENTS`).
        Jobs, this module and the board of several instances all key work by it: identical requests have
        identical keys."""
        exact = json.dumps(body, sort_keys=True, separators=(",", ":"))
        if self._between_clients or client is None:
            return Ask(provider, body, f"{provider}\n{exact}")
        return Ask(provider, body, f"{provider}\n{client.name}\n{exact}")

    async def answer(
        self,
        on_progress: ProgressFn | None,
        job_id: str,
        *,
        tool: str,
        asks: tuple[Ask, ...],
        timeout_s: float,
        client: Client | None,
    ) -> Outcome:
        """A job's outcome: one provider's answer or failure, or, asking several (`ask_both`), each one's side
        by side, failed only when every one failed. Never raises."""
        origin = Origin(tool, job_id, client)
        if len(asks) == 1:
            try:
                return await self._answered(asks[0], timeout_s, on_progress, origin)
            except CallError as err:
                return Failed.of(err)
        sides: dict[str, Answered | SideFailed] = {}
        progress = _Monotonic(on_progress) if on_progress else None

        async def side(ask: Ask) -> None:
            try:
                sides[ask.provider] = await self._answered(ask, timeout_s, progress, origin)
            except CallError as err:
                sides[ask.provider] = SideFailed(ask.provider, Failure.of(err))

        async with anyio.create_task_group() as tg:
            for ask in asks:
                tg.start_soon(side, ask)
        ordered = tuple(sides[ask.provider] for ask in asks)  # in the order asked: Fortytwo first
        failed = tuple(side for side in ordered if isinstance(side, SideFailed))
        return Failed.every_side(failed) if len(failed) == len(ordered) else Sides(ordered)

    async def _answered(self, ask: Ask, timeout_s: float, on_progress: ProgressFn | None, origin: Origin) -> Answered:
        """One provider's answer, and how it came about. Raises `CallError`.

        A finish reason other than `stop` is worth a field (`stop` is what nearly every answer would
        carry, and every client would check it on every call)."""
        started = time.perf_counter()
        completion = await self.complete(ask, timeout_s=timeout_s, on_progress=on_progress, origin=origin)
        choices = completion.choices
        answer = Answer(
            text=choices[0].text,
            finish_reason=None if choices[0].finish_reason == "stop" else choices[0].finish_reason,
            usage=completion.usage,
            choices=[
                c.model_copy(update={"finish_reason": None if c.finish_reason == "stop" else c.finish_reason})
                for c in choices
            ]
            if len(choices) > 1
            else None,
            cached=True if completion.cached else None,
        )
        latency_ms = round((time.perf_counter() - started) * 1000)
        return Answered(
            ask.provider,
            answer,
            Trace(latency_ms=latency_ms, attempts=completion.attempts, model=completion.model, id=completion.id),
        )

    async def complete(
        self,
        ask: Ask,
        *,
        timeout_s: float,
        on_progress: ProgressFn | None = None,
        origin: Origin = Origin(),
    ) -> Completion:
        """The answer to `ask`: from the cache, from an identical request in flight, or from a new one.

        Raises `CallError`.
        """
        provider, body, key = ask.provider, ask.body, ask.key
        endpoint = self.upstream.endpoints[provider]
        endpoint.require_key()
        client = origin.client.name if origin.client is not None else None
        while True:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > time.monotonic():
                if cached[2] != client:
                    await self.ledger.check(provider, endpoint.spec.label, origin.client)
                    await self._joined(ask, cached[1], origin)
                return replace(cached[1], cached=True)
            request = self._running.get(key)
            if request is None:
                return await self._send(key, provider, body, timeout_s, on_progress=on_progress, origin=origin)
            log.info("%s: joining an identical request already in flight", endpoint.spec.label)
            if request.client != client:  # another client's: its own budget first
                await self.ledger.check(provider, endpoint.spec.label, origin.client)
            listeners = request.listeners if request.streams else None
            await wait_with_progress(
                request.done, on_progress, listeners, endpoint.spec.label, self.upstream.heartbeat_s
            )
            if request.error is not None:
                raise request.error  # shared by every caller of the request; callers only read it
            if request.result is not None:
                if request.client == client:
                    return request.result
                await self._joined(ask, request.result, origin)
                return replace(request.result, cached=True)
            # Its caller was cancelled before an answer came: this caller still wants one.

    async def _joined(self, ask: Ask, completion: Completion, origin: Origin) -> None:
        """Another client's answer served this one: a row of its own, marked shared (not spent again)."""
        row = _reservation(ask.provider, ask.body, origin, time.time())
        shared = replace(
            row, outcome="answer", attempts=0, reserved_tokens=None, shared=True, model=completion.model or row.model
        )
        await self.ledger.shared(_with_usage(shared, completion))

    async def _send(
        self,
        key: str,
        provider: str,
        body: dict[str, Any],
        timeout_s: float,
        *,
        on_progress: ProgressFn | None,
        origin: Origin,
    ) -> Completion:
        label = self.upstream.endpoints[provider].spec.label
        await self.ledger.check(provider, label, origin.client)  # spent already: refused before it queues
        request = _Request(streams=on_progress is not None, client=origin.client.name if origin.client else None)
        if on_progress is not None:
            request.listeners.append(on_progress)
        self._running[key] = request
        started = time.time()
        reserved: UsageRow | None = None

        async def leaving(_attempt: int) -> None:
            """Each attempt, as it leaves the queue: the budgets are checked then, with what is in flight."""
            nonlocal reserved
            if reserved is None:
                reservation = _reservation(provider, body, origin, started)
                await self.ledger.reserve(reservation, label, origin.client)
                reserved = reservation
            else:
                await self.ledger.check(provider, label, origin.client)

        model = body.get("model")
        try:
            with request_span(provider, model if isinstance(model, str) else None, origin.job_id) as traced:
                request.result = await self.upstream.complete(
                    provider,
                    body,
                    timeout_s=timeout_s,
                    on_progress=request.listeners if request.streams else None,
                    leaving=leaving,
                    client=origin.client.name if origin.client is not None else None,
                    headers=traced.headers,
                )
                traced.answered(request.result)
        except CallError as err:
            request.error = err
            raise
        finally:
            del self._running[key]
            # Only a request that left is counted: one cancelled or refused in the queue cost nothing.
            if reserved is not None:
                row = _row(reserved, started, request)
                await self.ledger.settle(row, reserved)
                if self.observer is not None:
                    self.observer.request_done(row, request.result.first_chunk_s if request.result else None)
            request.done.set()
        if self._cache_ttl_s > 0:
            now = time.monotonic()
            for stale in [k for k, (expires, _, _) in self._cache.items() if expires <= now]:
                del self._cache[stale]
            self._cache[key] = (now + self._cache_ttl_s, request.result, request.client)
        return request.result


class _Monotonic:
    """Merges several providers' progress into one rising sequence, as MCP requires."""

    def __init__(self, send: ProgressFn) -> None:
        self._send = send
        self._count = 0

    async def __call__(self, progress: float, message: str) -> None:
        self._count += 1
        await self._send(float(self._count), message)


def _reservation(provider: str, body: dict[str, Any], origin: Origin, started: float) -> UsageRow:
    """A request's row as it leaves: counted at its prompt's size (about four characters a token) and
    its `max_tokens` until it ends."""
    model = body.get("model")
    max_tokens = body.get("max_tokens")
    prompt = len(json.dumps(body.get("messages", ""))) // 4
    return UsageRow(
        at=started,
        tool=origin.tool,
        provider=provider,
        model=model if isinstance(model, str) else None,
        outcome=SENT,
        status=None,
        attempts=None,
        prompt_tokens=None,
        completion_tokens=None,
        total_tokens=None,
        latency_ms=0,
        job_id=origin.job_id,
        client=origin.client.name if origin.client is not None else None,
        ref=secrets.token_hex(12),
        reserved_tokens=prompt + (max_tokens if isinstance(max_tokens, int) else 0),
    )


def _row(reserved: UsageRow, started: float, request: _Request) -> UsageRow:
    """The request's row once it ended: its outcome and usage, never its text."""
    result, error = request.result, request.error
    ended = replace(
        reserved,
        model=result.model if result is not None and result.model else reserved.model,
        outcome="answer" if result is not None else error.kind if error is not None else "cancelled",
        status=error.status if error is not None else None,
        attempts=result.attempts if result is not None else error.attempts if error is not None else None,
        latency_ms=round((time.time() - started) * 1000),
    )
    return _with_usage(ended, result)


def _with_usage(row: UsageRow, completion: Completion | None) -> UsageRow:
    """The row with the token counts the provider reported (none when it reported nothing)."""
    usage = completion.usage if completion is not None else None
    return replace(
        row,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        total_tokens=usage.total_tokens if usage else None,
    )
