"""Long calls the host runs itself: MCP tasks of both generations, as views of the jobs we already run.

A task is a job: one id (`get_result` and `cancel_job` take a task id, the task methods a job id),
one owner (another client's task is as unknown as one that never existed), one TTL, in-flight
sharing, ledger rows and Redis sharing, all the runner's. This module only decides when a call
becomes a task and answers the task methods; `server.results` renders the shapes.

- **2026-07-28, the Tasks extension** (`io.modelcontextprotocol/tasks`, SEP-2663): `Tasks`, an SDK
  `Extension`. A `tools/call` of an ask_* tool whose request declares the extension waits up to
  `SWARM_MCP_TASK_HANDOVER` for its answer, and otherwise returns `CreateTaskResult`;
  `tasks/get` returns the task with the tool's result inline once completed, `tasks/cancel` and
  `tasks/update` acknowledge.
- **2025-11-25 experimental tasks**: `LegacyTasks`, a middleware, since that generation's shapes
  sit outside what the SDK validates for 2025-11-25 results. It advertises `capabilities.tasks`
  and `execution.taskSupport` on the ask_* tools, and turns a `tools/call` carrying `task` into a
  task at once; `tasks/get`, `tasks/result`, `tasks/list` and `tasks/cancel` answer in its shapes
  (the method handlers are `Tasks`', which answer by the request's protocol version).

A call the host runs as a task takes the one path every call takes (`server.calls.serve`), given the
hand-over time instead of `wait_s`; what it returns is a job still running (the task) or what the
call produced at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar, cast

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.server import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolRequestParams, PaginatedRequestParams, RequestParams
from mcp_types.jsonrpc import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ConfigDict, Field

from swarm_inference_mcp.server.calls import AppState, client_of_request, progress_of, serve
from swarm_inference_mcp.server.clients import client_name
from swarm_inference_mcp.server.jobs.outcome import Outcome
from swarm_inference_mcp.server.jobs.runner import JobRunner
from swarm_inference_mcp.server.jobs.table import Job, Work
from swarm_inference_mcp.server.results import render, task_2025, task_2026, task_payload, task_status
from swarm_inference_mcp.tools import PROVIDERS
from swarm_inference_mcp.tools.errors.sentences import task_already_ended, task_cursor_unknown
from swarm_inference_mcp.tools.errors.tree import CallError

T = TypeVar("T")

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
TASK_TOOLS = frozenset({*(spec.tool_name for spec in PROVIDERS), "ask_both"})
"""The tools whose calls may become tasks: the ones that ask a swarm."""
_CURSOR = re.compile(r"[0-9]{1,9}")
"""A `tasks/list` cursor as we hand them out: where the next page starts."""
LIST_PAGE = 100
"""Tasks per page of `tasks/list`."""
LEGACY_CAPABILITY: dict[str, Any] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}
"""What `initialize` advertises under `capabilities.tasks` (2025-11-25)."""


class TaskIdParams(RequestParams):
    model_config = ConfigDict(extra="allow")

    task_id: str = Field(alias="taskId", min_length=1, max_length=200)


class Tasks(Extension):
    """The Tasks extension, and the task methods of both generations."""

    identifier = TASKS_EXTENSION

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding("tasks/get", TaskIdParams, self._get),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel),
            MethodBinding("tasks/update", TaskIdParams, self._update),
            MethodBinding("tasks/result", TaskIdParams, self._result),
            MethodBinding("tasks/list", PaginatedRequestParams, self._list),
        )

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if params.name not in TASK_TOOLS or not _declares_extension(ctx):
            return await call_next(ctx)
        state: AppState = ctx.lifespan_context
        client = client_of_request(ctx.request)
        handover_s = state.settings.task_handover
        reply = await serve(state, params.name, params.arguments or {}, client, progress_of(ctx), handover_s=handover_s)
        if isinstance(reply, Job) and reply.outcome is None:
            return _view_2026(state, reply, created=True)
        return render(
            reply, state.jobs.ttl_s, state.settings.max_result_chars
        )  # answered within the hand-over time, or refused

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        state, client = _caller(ctx)
        job = await _snapshot(state.jobs, params.task_id, "tasks/get", client)
        if _modern(ctx):
            return _view_2026(state, job)
        return _view_2025(state, job)

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        state, client = _caller(ctx)
        job = await _snapshot(state.jobs, params.task_id, "tasks/cancel", client)
        if job.outcome is not None and not _modern(ctx):
            raise MCPError(INVALID_PARAMS, task_already_ended(job.id, task_status(job)).sentence)
        if job.outcome is None:
            await _refusing(state.jobs.cancel(job.id, client))
        if _modern(ctx):
            return {}
        await _refusing(state.jobs.get_result(job.id, _CANCEL_CONFIRM_S, None, client))  # it ends at once here
        job = await _snapshot(state.jobs, job.id, "tasks/cancel", client)
        return _view_2025(state, job)

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        """Our tasks never ask for input: a known task acknowledges, whatever responses come."""
        state, client = _caller(ctx)
        await _snapshot(state.jobs, params.task_id, "tasks/update", client)
        return {}

    async def _result(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        """`tasks/result` (2025-11-25): waits for the outcome, then returns the tool's result."""
        state, client = _caller(ctx)
        while True:
            reply = await _refusing(state.jobs.get_result(params.task_id, math.inf, None, client))
            if not isinstance(reply, Job):
                return task_payload(params.task_id, reply, state.settings.max_result_chars)

    async def _list(self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams) -> dict[str, Any]:
        """`tasks/list` (2025-11-25): the caller's own jobs, oldest first, `LIST_PAGE` a page."""
        state, client = _caller(ctx)
        jobs, _ = await state.jobs.records(client)
        if params.cursor is not None and not _CURSOR.fullmatch(params.cursor):
            raise MCPError(INVALID_PARAMS, task_cursor_unknown(params.cursor).sentence)
        start = int(params.cursor) if params.cursor else 0
        page = jobs[start : start + LIST_PAGE]
        listing: dict[str, Any] = {"tasks": [_view_2025(state, job) for job in page]}
        if start + LIST_PAGE < len(jobs):
            listing["nextCursor"] = str(start + LIST_PAGE)
        return listing


_CANCEL_CONFIRM_S = 5.0
"""How long `tasks/cancel` (2025-11-25) waits to return the task as cancelled."""


class LegacyTasks:
    """Middleware for the 2025-11-25 generation: its capability, its tools' `execution`, and a
    `tools/call` with `task` answered with `{task}` at once."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if _modern(ctx) or ctx.method not in ("initialize", "tools/list", "tools/call"):
            return await call_next(ctx)
        params = ctx.params if isinstance(ctx.params, dict) else {}
        name = params.get("name")
        if (
            ctx.method == "tools/call"
            and params.get("task") is not None
            and isinstance(name, str)
            and name in TASK_TOOLS
        ):
            return await self._task_call(ctx, call_next, name)
        result = await call_next(ctx)
        if not isinstance(result, dict):
            return result
        if ctx.method == "initialize":
            result.setdefault("capabilities", {})["tasks"] = LEGACY_CAPABILITY
        else:
            for tool in result.get("tools", ()):
                if tool.get("name") in TASK_TOOLS:
                    tool["execution"] = {"taskSupport": "optional"}
        return result

    async def _task_call(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext, tool: str) -> HandlerResult:
        state: AppState = ctx.lifespan_context
        client = client_of_request(ctx.request)
        arguments = (ctx.params or {}).get("arguments")
        raw = arguments if isinstance(arguments, dict) else {}
        reply = await serve(state, tool, raw, client, progress_of(ctx), handover_s=0.0, hand_out=True)
        if not isinstance(reply, Job):  # refused before any work started
            reply = state.jobs.adopt(Work.refused(tool, client_name(client)), cast("Outcome", reply))
        return {"task": _view_2025(state, reply)}


def _modern(ctx: ServerRequestContext[Any, Any]) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _declares_extension(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request (2026-07-28) declares the Tasks extension in its client capabilities."""
    if not _modern(ctx):
        return False
    capabilities = ctx.session.client_capabilities
    return bool(capabilities and capabilities.extensions and TASKS_EXTENSION in capabilities.extensions)


def _caller(ctx: ServerRequestContext[Any, Any]) -> tuple[AppState, str | None]:
    """The server's state and the asking client's name; a 2026-07-28 request must declare the extension."""
    if _modern(ctx):
        require_client_extension(ctx, TASKS_EXTENSION)
    return ctx.lifespan_context, client_name(client_of_request(ctx.request))


def _view_2026(state: AppState, job: Job, *, created: bool = False) -> dict[str, Any]:
    ttl_ms, poll_ms = _timing(state, job)
    return task_2026(job, ttl_ms=ttl_ms, poll_ms=poll_ms, limit=state.settings.max_result_chars, created=created)


def _view_2025(state: AppState, job: Job) -> dict[str, Any]:
    ttl_ms, poll_ms = _timing(state, job)
    return task_2025(job, ttl_ms=ttl_ms, poll_ms=poll_ms)


def _timing(state: AppState, job: Job) -> tuple[int, int]:
    """The task's ttl (how long from its creation it is kept at most: its deadline, then
    `SWARM_MCP_JOB_TTL`) and the poll interval, in milliseconds."""
    return round((job.timeout_s + state.settings.job_ttl) * 1000), round(state.settings.task_poll * 1000)


async def _snapshot(jobs: JobRunner, task_id: str, method: str, client: str | None) -> Job:
    return await _refusing(jobs.snapshot(task_id, method, client))


async def _refusing(awaitable: Awaitable[T]) -> T:
    """Await a runner call; an unknown, expired or foreign id (any refusal) is `-32602` in our sentence."""
    try:
        return await awaitable
    except CallError as err:
        raise MCPError(INVALID_PARAMS, err.sentence) from None
