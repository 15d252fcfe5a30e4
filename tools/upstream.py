"""The one place a request is sent: deadline, concurrency cap, retries, streaming (where it goes, with
which key, over which client: `tools.connection`).

`Upstream.complete()` takes a provider name and a request body and returns a `Completion` or
raises one `CallError`. It never formats text for a person beyond the error sentences built
in `tools.errors`, and it knows nothing of MCP except the progress callback it may be handed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import httpx2

from swarm_inference_mcp.tools.completion import Completion, StreamAccumulator, model_ids, parse_completion
from swarm_inference_mcp.tools.connection import Endpoint, FairLimiter, SharedClient
from swarm_inference_mcp.tools.errors.sentences import (
    call_deadline,
    client_not_built,
    connection_failed,
    models_deadline,
    queued_out,
    status_error,
    stream_broke,
    too_large,
)
from swarm_inference_mcp.tools.errors.tree import CallError
from swarm_inference_mcp.tools.progress import ProgressFn, ProgressReporter

log = logging.getLogger(__name__)

MODELS_TTL_S = 300.0
"""How long a provider's model list is reused: model catalogues change on the scale of days."""
MAX_ERROR_BODY = 64 * 1024
"""We read at most this much of an error answer: enough for any JSON error, not a whole HTML site."""


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed attempt is tried again, and how long we wait first.

    Only failures where the upstream cannot have run the job to completion are retried: 429,
    502/503/504, and a connection that could not be opened. A 500 may mean the job ran (and was
    billed), so it is retried only with `retry_server_errors`.
    """

    max_retries: int = 2
    retry_server_errors: bool = False
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    max_wait_s: float = 60.0
    """The longest server-requested wait we sleep through; a longer one fails at once with it."""
    send_floor_s: float = 5.0
    """A request that waited in the queue for a free place is not sent with less of its deadline left:
    it would be cut off (and perhaps billed) before a swarm could answer."""

    def should_retry(self, err: CallError, attempt: int) -> bool:
        if attempt > self.max_retries:
            return False
        return err.retryable or (self.retry_server_errors and err.kind == "upstream" and err.status == 500)

    def wait_s(self, err: CallError, attempt: int) -> float:
        if err.retry_after_s is not None:
            return err.retry_after_s
        backoff: float = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempt - 1))
        return backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography


Leaving = Callable[[int], Awaitable[None]]
"""Told of each attempt (its number) as it leaves the queue, just before it is sent; what it raises
(a spent budget) ends the call there, and the attempt is never sent."""


@dataclass
class _CallState:
    """What one call has done so far, read when its deadline cuts it short."""

    stream: StreamAccumulator | None = None
    """The current attempt's stream, when streamed."""
    attempts: int = 0
    sent: bool = False
    """An attempt left for the upstream: a request that never did was not paid for."""
    leaving: Leaving | None = None
    started: float = field(default_factory=time.monotonic)
    client: str | None = None
    """Who asked: the provider's places are shared fairly between clients (`tools.connection.FairLimiter`)."""
    queued: bool = False
    """Its last attempt waited for a free place under the provider's concurrency cap."""
    headers: httpx2.Headers = field(default_factory=httpx2.Headers)
    """What each attempt sends: the provider's headers, with the call's own (a `traceparent`)."""


class Upstream:
    """Sends chat completions to the configured providers over one shared `httpx2.AsyncClient`."""

    def __init__(
        self,
        client: SharedClient,
        endpoints: Mapping[str, Endpoint],
        retry: RetryPolicy,
        heartbeat_s: float,
        *,
        max_response_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self._shared = client
        self._max_bytes = max_response_bytes
        """The most of a response body read (streamed or not); a longer one is cut off (`too_large`)."""
        self.endpoints = dict(endpoints)
        self._retry = retry
        self.heartbeat_s = heartbeat_s
        self._limiters = {name: FairLimiter(ep.settings.max_concurrency) for name, ep in endpoints.items()}
        self._secrets = tuple(
            ep.settings.api_key.get_secret_value() for ep in endpoints.values() if ep.settings.api_key
        )
        self._models: dict[str, tuple[float, list[str]]] = {}

    def queued(self) -> dict[tuple[str, str | None], int]:
        """Requests waiting for a place under their provider's cap, by provider and client."""
        return {
            (provider, client): count
            for provider, limiter in self._limiters.items()
            for client, count in limiter.waiting().items()
        }

    @property
    def _client(self) -> httpx2.AsyncClient:
        """The shared client: `complete` and `list_models` make sure it is built (`_ready`) first."""
        return cast("httpx2.AsyncClient", self._shared.client)

    async def _ready(self, label: str) -> None:
        """Wait for the shared client if it is still being built; one that cannot be is a `ConfigError`."""
        try:
            await self._shared.get()
        except Exception as exc:  # noqa: BLE001 - whatever httpx raised, the sentence says where to look
            raise client_not_built(label, exc) from None

    async def list_models(self, provider: str, *, timeout_s: float) -> list[str]:
        """The model ids `GET {base}/models` lists, reused for `MODELS_TTL_S`."""
        endpoint = self.endpoints[provider]
        label = endpoint.spec.label
        cached = self._models.get(provider)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        if self._shared.client is None:
            await self._ready(label)
        with anyio.move_on_after(timeout_s):
            try:
                request = self._client.build_request("GET", endpoint.models_url, headers=endpoint.headers)
                response = await self._client.send(request, stream=True)
                try:
                    if response.status_code >= 400:
                        raise (await self._status_error(endpoint, response)).redact(self._secrets)
                    content = await self._body(label, response)
                finally:
                    await response.aclose()
            except httpx2.TransportError as exc:
                raise _transport_error(label, exc, received=False).redact(self._secrets) from None
            ids = model_ids(label, content)
            self._models[provider] = (time.monotonic() + MODELS_TTL_S, ids)
            return ids
        raise models_deadline(label, timeout_s)

    async def complete(
        self,
        provider: str,
        body: dict[str, Any],
        *,
        timeout_s: float,
        on_progress: ProgressFn | None = None,
        leaving: Leaving | None = None,
        client: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Completion:
        """One answer, streamed when `on_progress` is given; retries and waits live inside `timeout_s`.
        `leaving` is told of each attempt before it is sent; `headers` are sent besides the provider's own
        (a `traceparent`)."""
        endpoint = self.endpoints[provider]
        label = endpoint.spec.label
        if self._shared.client is None:
            await self._ready(label)
        reporter = ProgressReporter(on_progress, label, self.heartbeat_s) if on_progress else None
        sent_headers = httpx2.Headers({**endpoint.headers, **headers}) if headers else endpoint.headers
        state = _CallState(leaving=leaving, client=client, headers=sent_headers)
        failure: CallError | None = None
        deadline = time.monotonic() + timeout_s  # the asyncio loop's clock
        # asyncio's own timeout, not an anyio cancel scope: it is on every call's path.
        limit = asyncio.timeout_at(deadline)
        try:
            async with limit:
                try:
                    if reporter is None:
                        return await self._attempts(endpoint, body, None, state, deadline)
                    return await self._with_heartbeats(endpoint, body, reporter, state, deadline)
                except CallError as err:
                    failure = err
        except TimeoutError:
            if not limit.expired():
                raise
        if failure is None and not state.sent:
            failure = queued_out(label, timeout_s, endpoint.settings.max_concurrency, attempts=state.attempts)
        if failure is None:
            failure = call_deadline(label, timeout_s, state.attempts, state.stream.partial_text if state.stream else "")
        raise failure.redact(self._secrets)

    async def _with_heartbeats(
        self, endpoint: Endpoint, body: dict[str, Any], reporter: ProgressReporter, state: _CallState, deadline: float
    ) -> Completion:
        """`_attempts` with the reporter's heartbeats running beside it (streamed calls only)."""
        failure: CallError
        async with anyio.create_task_group() as tg:
            tg.start_soon(reporter.run_heartbeats)
            try:
                return await self._attempts(endpoint, body, reporter, state, deadline)
            except CallError as err:
                failure = err  # raised below, outside the task group, so it is not wrapped in a group
            finally:
                tg.cancel_scope.cancel()
        raise failure

    async def _attempts(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        reporter: ProgressReporter | None,
        state: _CallState,
        deadline: float,
    ) -> Completion:
        """The retry loop: each attempt waits for a place under the provider's concurrency cap."""
        label = endpoint.spec.label
        while True:
            state.attempts += 1
            limiter = self._limiters[endpoint.spec.name]
            state.queued = limiter.free == 0
            try:
                await limiter.acquire(state.client)
                try:
                    if state.queued and deadline - time.monotonic() < self._retry.send_floor_s:
                        raise queued_out(label, deadline - state.started, endpoint.settings.max_concurrency)
                    if state.leaving is not None:
                        await state.leaving(state.attempts)
                    state.sent = True
                    if reporter is None:
                        completion = await self._post(endpoint, body, state.headers)
                    else:
                        state.stream = StreamAccumulator(label)
                        completion = await self._stream(endpoint, body, state.headers, state.stream, reporter)
                finally:
                    limiter.release()
                completion.attempts = state.attempts
                return completion
            except CallError as err:
                err.attempts = state.attempts
                if not self._retry.should_retry(err, state.attempts):
                    raise
                wait = self._retry.wait_s(err, state.attempts)
                if wait > self._retry.max_wait_s or time.monotonic() + wait >= deadline:
                    log.info("%s: not waiting %.1f s to retry; it would overrun the deadline", label, wait)
                    raise
                log.info("%s: attempt %d failed (%s); retrying in %.1f s", label, state.attempts, err.kind, wait)
                await anyio.sleep(wait)

    async def _post(self, endpoint: Endpoint, body: dict[str, Any], headers: httpx2.Headers) -> Completion:
        label = endpoint.spec.label
        started = time.monotonic()
        answered = False
        request = self._client.build_request("POST", endpoint.url, json=body, headers=headers)
        try:
            response = await self._client.send(request, stream=True)
            answered = True
            try:
                if response.status_code >= 400:
                    raise await self._status_error(endpoint, response)
                content = await self._body(label, response)
            finally:
                await response.aclose()
        except httpx2.TransportError as exc:
            raise _transport_error(label, exc, received=answered) from None
        log.info("%s: HTTP %d in %.2f s", label, response.status_code, time.monotonic() - started)
        return parse_completion(label, content)

    async def _stream(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        headers: httpx2.Headers,
        acc: StreamAccumulator,
        reporter: ProgressReporter,
    ) -> Completion:
        label = endpoint.spec.label
        sent = time.monotonic()
        first_chunk_s: float | None = None
        try:
            async with self._client.sse(
                endpoint.url, method="POST", json={**body, "stream": True}, headers=headers
            ) as source:
                response = source.response
                if response.status_code >= 400:
                    raise await self._status_error(endpoint, response)
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    # Some OpenAI-compatible servers ignore `stream` and answer in one piece.
                    return parse_completion(label, await self._body(label, response))
                received = 0
                async for event in source:
                    if first_chunk_s is None:
                        first_chunk_s = time.monotonic() - sent
                    received += len(event.data)
                    if received > self._max_bytes:
                        raise too_large(label, self._max_bytes)
                    if event.event == "error":
                        acc.raise_error(event.data)
                    added = acc.feed(event.data)
                    if acc.done:
                        break
                    await reporter.text(added)
        except httpx2.TransportError as exc:
            raise _transport_error(label, exc, received=acc.chunks > 0, partial=acc.partial_text) from None
        await reporter.flush()
        if not acc.complete:
            raise stream_broke(label, acc.chunks, acc.partial_text)
        completion = acc.result()
        completion.first_chunk_s = first_chunk_s
        return completion

    async def _body(self, label: str, response: httpx2.Response) -> bytes:
        """The whole body, read as it arrives; past the limit the read stops and the call fails."""
        body = bytearray()
        async for piece in response.aiter_bytes():
            body += piece
            if len(body) > self._max_bytes:
                raise too_large(label, self._max_bytes)
        return bytes(body)

    async def _status_error(self, endpoint: Endpoint, response: httpx2.Response) -> CallError:
        body = b""
        try:
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) >= MAX_ERROR_BODY:
                    break
        except httpx2.TransportError:
            pass  # the status alone still says what went wrong
        return status_error(
            endpoint.spec.label,
            response.status_code,
            body,
            response.headers,
            key_env=endpoint.spec.key_env,
            secrets=self._secrets,
        )


def _transport_error(label: str, exc: httpx2.TransportError, *, received: bool, partial: str = "") -> CallError:
    """A connection-level failure, by what httpx2 says happened."""
    if isinstance(exc, httpx2.ConnectTimeout | httpx2.ConnectError):
        return connection_failed(label, "refused")
    if isinstance(exc, httpx2.DecodingError | httpx2.SSEError):
        return connection_failed(label, "undecodable", partial)
    return connection_failed(label, "broke" if received else "closed", partial)
