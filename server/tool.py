"""The shell every tool call passes: its arguments parsed (one readable sentence per refusal), its handler
run inside the drain's count, its reply rendered (`server.results`) and counted by the observer."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, ConfigDict, ValidationError

from swarm_inference_mcp.server.calls import AppState
from swarm_inference_mcp.server.clients import Client, client_name, client_of_request
from swarm_inference_mcp.server.jobs.board import JobRecord
from swarm_inference_mcp.server.jobs.handles import CancelReport
from swarm_inference_mcp.server.jobs.outcome import Failed, Outcome
from swarm_inference_mcp.server.results import outcome_label, render, render_cancel
from swarm_inference_mcp.server.schemas import output_schema
from swarm_inference_mcp.server.tasks import current_task_call
from swarm_inference_mcp.tools.errors.sentences import argument_error, shutting_down
from swarm_inference_mcp.tools.errors.tree import CallError
from swarm_inference_mcp.tools.progress import ProgressFn

log = logging.getLogger(__name__)


class _RawArguments(ArgModelBase):
    """What the SDK validates: any object, handed to the tool function whole as `raw`."""

    model_config = ConfigDict(extra="allow")

    def model_dump_one_level(self) -> dict[str, Any]:
        return {"raw": dict(self.model_extra or {})}


ArgsT = TypeVar("ArgsT", bound=BaseModel)


Reply = Outcome | JobRecord | CancelReport
"""What a tool call produced, before it is rendered (`server.results`)."""
Handler = Callable[[AppState, BaseModel, ProgressFn | None, Client | None], Awaitable[Reply]]


def refused(err: CallError) -> Failed:
    """A call refused before any work started; a task view waiting on it is told what happened."""
    refused = Failed.of(err)
    task = current_task_call()
    if task is not None:
        task.outcome = refused
    return refused


def tool(
    *,
    name: str,
    title: str,
    description: str,
    args_model: type[BaseModel],
    outputs: tuple[type[BaseModel], ...],
    handler: Handler,
    annotations: ToolAnnotations | None = None,
) -> Tool:
    """A tool whose arguments are one pydantic model, handed whole to `handler`.

    The tool advertises `args_model`'s schema, but the SDK is given a model that takes any object:
    we validate against `args_model` ourselves, so that a bad argument gets one readable sentence
    and a structured error (`kind: invalid_arguments`) instead of pydantic's multi-line report.
    """

    async def call(raw: dict[str, Any], ctx: Context[AppState, Any]) -> CallToolResult:
        state = ctx.request_context.lifespan_context
        client = client_of_request(ctx.request_context.request)
        reply = await reply_to(raw, ctx, state, client)
        if state.observer is not None:
            state.observer.call_done(
                name, outcome_label(reply, tasked=current_task_call() is not None), client_name(client)
            )
        return render_cancel(reply) if isinstance(reply, CancelReport) else render(reply, state.jobs.ttl_s)

    async def reply_to(
        raw: dict[str, Any], ctx: Context[AppState, Any], state: AppState, client: Client | None
    ) -> Reply:
        try:
            args = parse_arguments(args_model, raw)
        except ValidationError as exc:
            # Argument names only: the rejected values are the caller's data.
            log.info("%s: refused arguments %s", name, sorted({".".join(map(str, e["loc"])) for e in exc.errors()}))
            return refused(argument_error(name, exc))
        if state.in_flight.draining:
            return refused(shutting_down(name, started=False))
        with state.in_flight.track():
            try:
                return await handler(state, args, _progress_sender(ctx, ctx.request_context.meta), client)
            except CallError as err:  # a refusal before any work started (an unknown job id)
                return refused(err)
        # Only reached when the shutdown cancelled the call (its upstream requests are aborted by now).
        return refused(shutting_down(name, started=True))

    return Tool(
        fn=call,
        name=name,
        title=title,
        description=description,
        parameters=args_model.model_json_schema(by_alias=True),
        fn_metadata=FuncMetadata(arg_model=_RawArguments, output_model=None, output_schema=output_schema(*outputs)),
        is_async=True,
        context_kwarg="ctx",
        annotations=(
            annotations
            or ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
        ).model_copy(update={"title": title}),
    )


def parse_arguments(model: type[ArgsT], raw: dict[str, Any]) -> ArgsT:
    """Validate a tool's arguments, first decoding lists and objects that a client sent as JSON text
    (Claude Desktop is known to send `messages` as a string)."""
    decoded = dict(raw)
    for key, value in raw.items():
        if not isinstance(value, str) or value.lstrip()[:1] not in ("[", "{"):  # no JSON list or object in it
            continue
        field = model.model_fields.get(key)
        if field is None or field.annotation is str:
            continue
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            continue
        if isinstance(parsed, list | dict):
            decoded[key] = parsed
    return model.model_validate(decoded)


def _progress_sender(ctx: Context[AppState, Any], meta: Any) -> ProgressFn | None:
    """A progress callback when the client sent a progress token (in the request's `meta`); otherwise
    None (no streaming)."""
    if not meta or meta.get("progress_token") is None:
        return None

    async def send(progress: float, message: str) -> None:
        await ctx.report_progress(progress, None, message)

    return send
