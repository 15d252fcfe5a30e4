"""Where each provider is, the one HTTP client every request shares, each provider's places (its
concurrency cap), and the span each request is traced in: what `tools.upstream` sends over.

`FairLimiter`: a provider's places (its concurrency cap), shared fairly between clients.

When a place frees, it goes to the client that has waited longest since it was last given one:
round robin over the clients waiting, first come, first served within one client. So one client's
long queue delays another client's first request by at most one place's turnover, however many
requests it queued. A free place is taken without yielding to the event loop, so a call under the
cap pays nothing for the fairness.

`request_span`: a span per upstream request, with the GenAI semantic conventions, and the
`traceparent` it sends. Written against the OpenTelemetry API, which the MCP SDK already loads (its
middleware makes the span of each tool call, continuing a `traceparent` sent in the request's
`_meta`). Until `server.telemetry` installs an SDK, every span is a no-op and nothing is sent
upstream. A span holds the provider, models, token counts, finish reasons, the job id and the
error's kind: never a prompt, an answer, an error's text or a key.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.trace import Span, SpanKind, StatusCode
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from swarm_inference_mcp.tools.completion import Completion
from swarm_inference_mcp.tools.errors.sentences import no_api_key
from swarm_inference_mcp.tools.errors.tree import CallError
from swarm_inference_mcp.tools.models import ProviderSpec

log = logging.getLogger(__name__)


_EVERY_PROCESS = "all server processes sharing the state file together; unset for no limit."


class ProviderSettings(BaseModel):
    """One provider's settings (`server.config` reads them from `<NAME>_API_KEY`, `<NAME>_BASE_URL` and
    the rest); a description's `{label}` and `{tool}` are the provider's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: SecretStr | None = Field(None, description="{label} API key.")
    base_url: str = Field(description="{label} API base; requests go to {{base}}/chat/completions.")
    model: str = Field(description="Default model of {tool}.")
    max_concurrency: int = Field(
        ge=1, le=1000, description="Most simultaneous requests to {label}; further calls wait their turn."
    )
    token_budget: int | None = Field(
        None, ge=1, description="Tokens this server may spend on {label} in its lifetime; unset for no limit."
    )
    daily_token_budget: int | None = Field(
        None, ge=1, description=f"Tokens spent on {{label}} per calendar day (local time), {_EVERY_PROCESS}"
    )
    monthly_token_budget: int | None = Field(
        None,
        ge=1,
        description="Tokens spent on {label} per calendar month (local time), counted like the daily budget; "
        "unset for no limit.",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @classmethod
    def defaults(cls, spec: ProviderSpec) -> dict[str, Any]:
        """The provider's own defaults, where the fields have none."""
        return {
            "base_url": spec.default_base_url,
            "model": spec.default_model,
            "max_concurrency": spec.default_max_concurrency,
        }


@dataclass(frozen=True)
class Endpoint:
    """One provider as configured: its spec and its settings (`base_url` has no trailing slash)."""

    spec: ProviderSpec
    settings: ProviderSettings

    # Parsed once: httpx parses a URL given as text again on every request.
    @functools.cached_property
    def url(self) -> httpx2.URL:
        return httpx2.URL(self.settings.base_url + "/chat/completions")

    @functools.cached_property
    def models_url(self) -> httpx2.URL:
        return httpx2.URL(self.settings.base_url + "/models")

    def require_key(self) -> str:
        """The API key, or the error that tells the user which variable to set."""
        if self.settings.api_key is None:
            raise no_api_key(self.spec.label, self.spec.key_env)
        return self.settings.api_key.get_secret_value()

    @functools.cached_property
    def headers(self) -> httpx2.Headers:
        """The auth header, built once (httpx normalises a dict on every request); raises `ConfigError`
        without a key."""
        key = self.require_key()
        return httpx2.Headers({"Authorization": f"Bearer {key}"} if self.spec.auth == "bearer" else {"x-api-key": key})


def new_client(max_connections: int, connect_timeout: float) -> httpx2.AsyncClient:
    """The server's one HTTP client, its pool sized so that the concurrency caps, not it, limit calls.

    At most 20 idle connections are kept (httpx's default): the pool checks every idle connection
    each time a request starts or ends, and on calls that take seconds reopening one saves nothing."""
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(connect=connect_timeout, read=None, write=None, pool=None),
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=min(max_connections, 20)),
        follow_redirects=False,
    )


class SharedClient:
    """The one `httpx2.AsyncClient` every upstream request shares, built in a thread of its own.

    Building it loads the system's CA certificates: about 40 ms, most of a server's start-up beyond
    its imports, and nothing needs them before the first upstream request. So the lifespan starts the
    build and the server answers `initialize` and `tools/list` meanwhile (OpenSSL releases the GIL
    while it loads); a request that comes sooner waits for the rest, and such requests then go on one
    by one (released all at once, 200 of them opened their connections as one burst, which raised
    the server's peak memory by up to 12 MiB). Started during the SDK's import instead, the build
    slowed the import more than it saved. An async context manager: leaving it closes the client
    (after waiting for it, if it is still being built).
    """

    def __init__(self, make: Callable[[], httpx2.AsyncClient]) -> None:
        self.client: httpx2.AsyncClient | None = None
        """Set once built and asked for (the first request to find it unset awaits `get`)."""
        self._building: concurrent.futures.Future[httpx2.AsyncClient] = concurrent.futures.Future()
        self._building.set_running_or_notify_cancel()  # a waiter that gives up cannot cancel the build
        self._early = asyncio.Lock()
        threading.Thread(target=self._build, args=(make,), name="http-client", daemon=True).start()

    def _build(self, make: Callable[[], httpx2.AsyncClient]) -> None:
        try:
            self._building.set_result(make())
        except Exception as exc:  # noqa: BLE001 - said once here; every request then says it in its sentence
            log.error("the HTTP client could not be set up (%s); every upstream request will fail", exc)
            self._building.set_exception(exc)

    async def get(self) -> httpx2.AsyncClient:
        """The client, once built; raises what building it raised."""
        if self.client is None:
            async with self._early:  # requests that came before it was built go on one by one, not as a burst
                if self.client is None:
                    self.client = await asyncio.wrap_future(self._building)
        return self.client

    async def __aenter__(self) -> SharedClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            client = await asyncio.wrap_future(self._building)
        except Exception:  # noqa: BLE001 - never built (said in the log): nothing to close
            return
        await client.aclose()


class FairLimiter:
    def __init__(self, places: int) -> None:
        self._free = places
        self._waiting: OrderedDict[str | None, deque[asyncio.Future[None]]] = OrderedDict()
        """Each waiting client's requests in order; the client first in line is the next one served."""

    @property
    def free(self) -> int:
        return self._free

    def waiting(self) -> dict[str | None, int]:
        """How many requests each client has waiting for a place."""
        return {client: len(queue) for client, queue in self._waiting.items()}

    async def acquire(self, client: str | None) -> None:
        """A place for one request of `client` (None: stdio, or no tokens); `release` it after."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, deque()).append(place)
        try:
            await place
        except asyncio.CancelledError:
            if place.done() and not place.cancelled():
                self.release()  # it was handed a place as it was cancelled: pass the place on
            else:
                self._forget(client, place)
            raise

    def release(self) -> None:
        while self._waiting:
            client, queue = next(iter(self._waiting.items()))
            place = queue.popleft()
            if queue:
                self._waiting.move_to_end(client)  # served: to the back of the line of clients
            else:
                del self._waiting[client]
            if not place.done():
                place.set_result(None)
                return
        self._free += 1

    def _forget(self, client: str | None, place: asyncio.Future[None]) -> None:
        queue = self._waiting.get(client)
        if queue is not None and place in queue:
            queue.remove(place)
            if not queue:
                del self._waiting[client]


_tracer = trace.get_tracer("swarm_inference_mcp")
"""A proxy: it follows whichever tracer provider is installed, now or later."""


@dataclass
class RequestSpan:
    span: Span
    headers: dict[str, str] = field(default_factory=dict)
    """What the upstream request carries: the W3C `traceparent` of this span, when it is recorded."""

    def answered(self, completion: Completion) -> None:
        if not self.span.is_recording():  # no tracer provider installed: nothing to describe
            return
        attributes: dict[str, str | int | list[str]] = {}
        if completion.model:
            attributes["gen_ai.response.model"] = completion.model
        if completion.id:
            attributes["gen_ai.response.id"] = completion.id
        if completion.usage is not None:
            attributes["gen_ai.usage.input_tokens"] = completion.usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = completion.usage.completion_tokens
        reasons = [choice.finish_reason for choice in completion.choices if choice.finish_reason]
        if reasons:
            attributes["gen_ai.response.finish_reasons"] = reasons
        attributes["swarm_mcp.attempts"] = completion.attempts
        self.span.set_attributes(attributes)

    def failed(self, error: CallError) -> None:
        self.span.set_attribute("error.type", error.kind)
        if error.status is not None:
            self.span.set_attribute("http.response.status_code", error.status)
        self.span.set_status(StatusCode.ERROR, error.kind)


@contextmanager
def request_span(provider: str, model: str | None, job_id: str | None) -> Iterator[RequestSpan]:
    """The span of one upstream request, a child of the current one (the tool call's, in the job's task);
    an `CallError` raised inside marks it failed."""
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": provider, "gen_ai.provider.name": provider}
    if model:
        attributes["gen_ai.request.model"] = model
    if job_id:
        attributes["swarm_mcp.job.id"] = job_id
    name = f"chat {model[:64]}" if model else "chat"  # the model is the caller's choice: its name is clipped
    with _tracer.start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        request = RequestSpan(span)
        if span.is_recording():
            inject(request.headers)
        try:
            yield request
        except CallError as err:
            request.failed(err)
            raise
