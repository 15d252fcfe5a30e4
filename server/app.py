"""`create_server(settings)`: the MCP face of the providers.

The lifespan owns the one HTTP client (and with it every connection pool and concurrency cap);
each provider becomes one tool whose arguments are that provider's pydantic model, validated by
the SDK before our code runs. This module is also the one place an `UpstreamError` becomes an
MCP error result.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx2
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import ConfigDict, create_model

from server import __version__
from server.config import Settings
from tools import PROVIDERS
from tools.completion import Completion
from tools.errors import UpstreamError
from tools.models import Answer, ChatArgs, ProviderSpec
from tools.upstream import RetryPolicy, Upstream

INSTRUCTIONS = (
    "Tools to get a second opinion from swarm inference services. ask_fortytwo asks the Fortytwo "
    "network (many nodes answer and rank each other; slow, often minutes). ask_swarm asks a Swarms "
    "agent through its OpenAI-compatible API. Both are paid per token: ask once and wait for the answer."
)


@dataclass(frozen=True)
class AppState:
    """What the lifespan hands every tool call."""

    settings: Settings
    upstream: Upstream


class _WholeArguments(ArgModelBase):
    """Hands the tool function the validated arguments model whole, as `args`, and refuses unknown keys."""

    model_config = ConfigDict(extra="forbid")

    def model_dump_one_level(self) -> dict[str, Any]:
        return {"args": self}


def http_client(settings: Settings, transport: httpx2.AsyncBaseTransport | None = None) -> httpx2.AsyncClient:
    """The server's one HTTP client, its pool sized so that the concurrency caps, not it, limit calls."""
    connections = settings.fortytwo_max_concurrency + settings.swarms_max_concurrency
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(connect=settings.connect_timeout, read=None, write=None, pool=None),
        limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections),
        transport=transport,
        follow_redirects=False,
    )


def create_server(settings: Settings, *, transport: httpx2.AsyncBaseTransport | None = None) -> MCPServer[AppState]:
    """Build the server; nothing is opened until the lifespan starts."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        async with http_client(settings, transport) as client:
            retry = RetryPolicy(max_retries=settings.max_retries, retry_server_errors=settings.retry_server_errors)
            yield AppState(settings, Upstream(client, settings.endpoints(), retry, settings.heartbeat))

    server: MCPServer[AppState] = MCPServer(
        "swarm-inference-mcp",
        title="Swarm inference",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        log_level=settings.log_level,
        tools=[_provider_tool(spec) for spec in PROVIDERS],
    )
    return server


def _provider_tool(spec: ProviderSpec) -> Tool:
    bases: tuple[type[ArgModelBase], ...] = (spec.args_model, _WholeArguments)  # type: ignore[assignment]  # a mix-in
    arg_model = cast(
        "type[ArgModelBase]", create_model(f"{spec.tool_name}Arguments", __base__=bases, __doc__=spec.description)
    )

    async def ask(args: ChatArgs, ctx: Context[AppState, Any]) -> CallToolResult:
        state = ctx.request_context.lifespan_context
        return await ask_provider(state, spec, args, _progress_sender(ctx))

    metadata = FuncMetadata(arg_model=arg_model, output_model=Answer)
    return Tool(
        fn=ask,
        name=spec.tool_name,
        title=spec.title,
        description=spec.description,
        parameters=arg_model.model_json_schema(by_alias=True),
        fn_metadata=metadata,
        is_async=True,
        context_kwarg="ctx",
        annotations=ToolAnnotations(
            title=spec.title, read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=True
        ),
    )


def _progress_sender(ctx: Context[AppState, Any]) -> Callable[[float, str], Awaitable[None]] | None:
    """A progress callback when the client sent a progress token; otherwise None (no streaming)."""
    meta = ctx.request_context.meta
    if not meta or meta.get("progress_token") is None:
        return None

    async def send(progress: float, message: str) -> None:
        await ctx.report_progress(progress, None, message)

    return send


async def ask_provider(
    state: AppState,
    spec: ProviderSpec,
    args: ChatArgs,
    on_progress: Callable[[float, str], Awaitable[None]] | None,
) -> CallToolResult:
    """One tool call: map, send, and turn the completion or the failure into a result."""
    endpoint = state.upstream.endpoints[spec.name]
    started = time.perf_counter()
    try:
        completion = await state.upstream.complete(
            spec.name,
            args.request_body(endpoint.model),
            timeout_s=state.settings.deadline_s(args.timeout_s),
            on_progress=on_progress,
        )
    except UpstreamError as err:
        return error_result(err)
    return answer_result(spec, completion, round((time.perf_counter() - started) * 1000))


def answer_result(spec: ProviderSpec, completion: Completion, latency_ms: int) -> CallToolResult:
    """The answer as text for the model to read, and as structured content for programs."""
    many = len(completion.choices) > 1
    answer = Answer(
        provider=spec.name,
        model=completion.model,
        id=completion.id,
        text=completion.text,
        finish_reason=completion.finish_reason,
        usage=completion.usage,
        latency_ms=latency_ms,
        attempts=completion.attempts,
        choices=completion.choices if many else None,
    )
    text = "\n\n".join(f"[choice {c.index + 1}]\n{c.text}" for c in completion.choices) if many else completion.text
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=answer.model_dump(mode="json"),
    )


def error_result(err: UpstreamError) -> CallToolResult:
    """A failure as an `isError` result: one sentence for people, `{"error": {...}}` for programs.

    Returned rather than raised, because a raised `ToolError` can carry only text.
    """
    return CallToolResult(
        content=[TextContent(type="text", text=err.sentence)],
        structured_content={"error": err.to_dict()},
        is_error=True,
    )
