"""Every tool call, one path down: its arguments parsed (one readable sentence per refusal), the call
run inside the drain's count, and what it produced handed back up to be rendered (`server.results`).

`serve` is that path. The tool functions the SDK calls reach it, and so do the task views
(`server.tasks`), which hand a call their hand-over time instead of `wait_s` and turn a job still
running into a task: nothing travels between them but arguments and return values. An ask_* call
becomes `Work` for the runner (`server.jobs.runner`), whose `run` is the request sharing's `answer`
(`server.jobs.sharing`), below it; list_models asks each provider directly.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import anyio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request

from swarm_inference_mcp.server.clients import Client
from swarm_inference_mcp.server.config import Settings
from swarm_inference_mcp.server.drain import InFlight
from swarm_inference_mcp.server.jobs.handles import GetResultArgs, JobArgs
from swarm_inference_mcp.server.jobs.outcome import Answered, Collected, Failed, Sides
from swarm_inference_mcp.server.jobs.runner import JobRunner
from swarm_inference_mcp.server.jobs.sharing import Ask, RequestSharing
from swarm_inference_mcp.server.jobs.table import Work
from swarm_inference_mcp.server.observe import Observer
from swarm_inference_mcp.server.results import Reply, fits, outcome_label, render
from swarm_inference_mcp.server.schemas import input_schema, output_schema
from swarm_inference_mcp.tools import PROVIDERS
from swarm_inference_mcp.tools.errors.sentences import argument_error, not_configured, shutting_down
from swarm_inference_mcp.tools.errors.tree import CallError
from swarm_inference_mcp.tools.models import ChatArgs, Conversation
from swarm_inference_mcp.tools.progress import ProgressFn
from swarm_inference_mcp.tools.providers.both import BothArgs

log = logging.getLogger(__name__)

ArgsT = TypeVar("ArgsT", bound=BaseModel)

ARGUMENTS: dict[str, type[BaseModel]] = {
    **{spec.tool_name: spec.args_model for spec in PROVIDERS},
    "ask_both": BothArgs,
    "get_result": GetResultArgs,
    "cancel_job": JobArgs,
}
"""Each tool's arguments, one pydantic model."""
_SPECS = {spec.tool_name: spec for spec in PROVIDERS}


@dataclass(frozen=True)
class AppState:
    """What the lifespan hands every tool call."""

    settings: Settings
    requests: RequestSharing
    in_flight: InFlight | None
    """The calls a shutdown drains, over HTTP; None over stdio, where the server stops with its client."""
    jobs: JobRunner
    observer: Observer | None
    """What the metrics count, over HTTP; None over stdio, where nothing is served."""


class _RawArguments(ArgModelBase):
    """What the SDK validates: any object, handed to the tool function whole as `raw`."""

    model_config = ConfigDict(extra="allow")

    def model_dump_one_level(self) -> dict[str, Any]:
        return {"raw": dict(self.model_extra or {})}


def tool(
    *,
    name: str,
    title: str,
    description: str,
    outputs: tuple[type[BaseModel], ...],
    annotations: ToolAnnotations | None = None,
) -> Tool:
    """The tool `name`, whose arguments are `ARGUMENTS[name]`.

    The tool advertises that model's schema, but the SDK is given a model that takes any object: `serve`
    validates, so that a bad argument gets one readable sentence and a structured error
    (`kind: invalid_arguments`) instead of pydantic's multi-line report.
    """

    async def call(raw: dict[str, Any], ctx: Context[AppState, Any]) -> CallToolResult:
        request = ctx.request_context
        reply = await serve(
            request.lifespan_context, name, raw, client_of_request(request.request), progress_of(request)
        )
        state = request.lifespan_context
        return render(reply, state.jobs.ttl_s, state.settings.max_result_chars)

    return Tool(
        fn=call,
        name=name,
        title=title,
        description=description,
        parameters=input_schema(ARGUMENTS[name]),
        fn_metadata=FuncMetadata(arg_model=_RawArguments, output_model=None, output_schema=output_schema(*outputs)),
        is_async=True,
        context_kwarg="ctx",
        annotations=annotations
        or ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=True),
    )


async def serve(
    state: AppState,
    name: str,
    raw: dict[str, Any],
    client: Client | None,
    progress: ProgressFn | None,
    *,
    handover_s: float | None = None,
    hand_out: bool = False,
) -> Reply:
    """What the call `name(raw)` produced: an outcome, its job still running, or a cancel's report.

    `handover_s`: the host runs the call as a task; an ask_* call waits only that long (instead of
    `wait_s`) and streams, so that the task's status says what the swarm is doing. `hand_out`: the
    host must get a job whatever happens (2025-11-25 tasks), even for an answer kept from an
    identical call. Never raises.
    """
    try:
        args = parse_arguments(ARGUMENTS[name], raw)
    except ValidationError as exc:
        # Argument names only: the rejected values are the caller's data.
        log.info("%s: refused arguments %s", name, sorted({".".join(map(str, e["loc"])) for e in exc.errors()}))
        reply: Reply = Failed.of(argument_error(name, exc))
    else:
        reply = await _tracked(state, name, args, client, progress, handover_s=handover_s, hand_out=hand_out)
    if state.observer is not None:
        state.observer.call_done(
            name, outcome_label(reply, tasked=handover_s is not None), None if client is None else client.name
        )
    return reply


async def _tracked(
    state: AppState,
    name: str,
    args: Any,
    client: Client | None,
    progress: ProgressFn | None,
    *,
    handover_s: float | None,
    hand_out: bool,
) -> Reply:
    """The call, inside the drain's count (over HTTP): a shutdown lets it finish, then cancels it."""
    if state.in_flight is not None and state.in_flight.draining:
        return Failed.of(shutting_down(name, started=False))
    owner = None if client is None else client.name
    with state.in_flight.track() if state.in_flight is not None else nullcontext():
        try:
            if name == "cancel_job":
                return await state.jobs.cancel(args.job_id, owner)
            wait_s = state.settings.wait if args.wait_s is None else args.wait_s  # then a job handle comes back
            if name == "get_result":
                got = await state.jobs.get_result(args.job_id, wait_s, progress, owner)
                return Collected(args.job_id, got, args.offset or 0) if isinstance(got, Answered | Sides) else got
            work = _work(state, name, args, client)
            limit = None if client is None else client.max_jobs or state.settings.max_jobs_per_client
            if handover_s is None:
                reply = await state.jobs.call(work, wait_s, progress, job_limit=limit)
            else:
                reply = await state.jobs.call(
                    work, handover_s, progress, stream=True, job_limit=limit, hand_out=hand_out
                )
            if isinstance(reply, Answered | Sides) and not fits(reply, state.settings.max_result_chars):
                return Collected(state.jobs.kept(work, reply), reply)  # to be read on from a kept job
            return reply
        except CallError as err:  # a refusal before any work started (an unknown job id, a limit)
            return Failed.of(err)
    # Only reached when the shutdown cancelled the call (its upstream requests are aborted by now).
    return Failed.of(shutting_down(name, started=True))


def _work(state: AppState, name: str, args: Conversation, client: Client | None) -> Work:
    """An ask_* call's upstream work: one request body per provider it asks."""
    requests = state.requests
    endpoints = requests.upstream.endpoints
    requested = args.timeout_s if args.timeout_s is not None else state.settings.timeout
    timeout_s = min(requested, state.settings.max_timeout)
    asks: tuple[Ask, ...]
    providers: tuple[str, ...]
    if isinstance(args, ChatArgs):
        spec = _SPECS[name]
        asks = (requests.ask(spec.name, args.request_body(endpoints[spec.name].settings.model), client),)
        labels, providers = spec.label, (spec.name,)
    else:
        both = cast("BothArgs", args)
        messages = both.chat_messages()
        asks = tuple(
            requests.ask(
                spec.name,
                {"model": both.model_for(spec.name) or endpoints[spec.name].settings.model, "messages": messages},
                client,
            )
            for spec in PROVIDERS
        )
        labels, providers = " and ".join(spec.label for spec in PROVIDERS), tuple(spec.name for spec in PROVIDERS)
    run = partial(requests.answer, tool=name, asks=asks, timeout_s=timeout_s, client=client)
    owner = None if client is None else client.name
    return Work(name, providers, labels, "\n".join(ask.key for ask in asks), timeout_s, owner, run)


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


def client_of_request(request: Any) -> Client | None:
    """The client the gate (`server.gateway.serve`) authenticated for this request, or None (stdio, or no tokens)."""
    user = request.scope.get("user") if isinstance(request, Request) else None
    if not isinstance(user, AuthenticatedUser):
        return None
    claims = user.access_token.claims or {}
    return Client(user.access_token.client_id, claims.get("daily_tokens"), max_jobs=claims.get("max_jobs"))


def progress_of(request: ServerRequestContext[Any, Any]) -> ProgressFn | None:
    """A progress callback when the client sent a progress token; otherwise None (no streaming)."""
    if not request.meta or request.meta.get("progress_token") is None:
        return None

    async def send(progress: float, message: str) -> None:
        await request.session.report_progress(progress, None, message)

    return send


async def list_models(state: AppState) -> dict[str, Any]:
    """Each provider's model ids (cached a few minutes); an unconfigured or failing one says so. A field
    that does not apply is left out (`models` of a provider that failed, `error` of one that answered)."""
    upstream = state.requests.upstream
    listing: dict[str, dict[str, Any]] = {}

    async def one(name: str) -> None:
        endpoint = upstream.endpoints[name]
        entry: dict[str, Any] = {
            "configured": endpoint.settings.api_key is not None,
            "default_model": endpoint.settings.model,
        }
        if endpoint.settings.api_key is None:
            entry["error"] = not_configured(endpoint.spec.key_env)
        else:
            try:
                entry["models"] = await upstream.list_models(name, timeout_s=30.0)
            except CallError as err:
                entry["error"] = err.sentence
        listing[name] = entry

    async with anyio.create_task_group() as tg:
        for spec in PROVIDERS:
            tg.start_soon(one, spec.name)
    return {"providers": {spec.name: listing[spec.name] for spec in PROVIDERS}}
