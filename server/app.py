"""`create_server(settings)`: the MCP face of the providers.

The lifespan owns the one HTTP client (and with it every connection pool and concurrency cap), the
usage store and the job handles. Every tool call takes one path, `server.calls.serve`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, BinaryIO, cast

import anyio
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.stdio import stdio_server
from mcp_types import CallToolResult, ToolAnnotations

from swarm_inference_mcp.server import __version__
from swarm_inference_mcp.server.accounting import view
from swarm_inference_mcp.server.accounting.ledger import Ledger
from swarm_inference_mcp.server.calls import AppState, client_of_request, list_models, tool
from swarm_inference_mcp.server.clients import Client, client_name
from swarm_inference_mcp.server.config import Settings
from swarm_inference_mcp.server.drain import InFlight
from swarm_inference_mcp.server.jobs.handles import CancelOutcome, RunningJob
from swarm_inference_mcp.server.jobs.outcome import Failed
from swarm_inference_mcp.server.jobs.runner import JobRunner, new_instance_id
from swarm_inference_mcp.server.jobs.sharing import RequestSharing
from swarm_inference_mcp.server.jobs.table import Job
from swarm_inference_mcp.server.observe import Observer
from swarm_inference_mcp.server.results import outcome_text, page_end, render_models
from swarm_inference_mcp.server.state import shared_state, store_location
from swarm_inference_mcp.server.tasks import LegacyTasks, Tasks
from swarm_inference_mcp.tools import PROVIDERS
from swarm_inference_mcp.tools.errors.sentences import NOT_RUNNING, answer_not_there
from swarm_inference_mcp.tools.errors.tree import CallError
from swarm_inference_mcp.tools.models import Answer, AnswerPage, BothAnswers
from swarm_inference_mcp.tools.upstream import RetryPolicy, Upstream

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
"""How much of stdin is read at once."""

INSTRUCTIONS = (
    "Tools to get a second opinion from swarm inference services. ask_fortytwo asks the Fortytwo "
    "network (many nodes answer and rank each other; slow, often minutes). ask_swarm asks a Swarms "
    "agent through its OpenAI-compatible API. ask_both asks both at once. list_models shows what each serves. "
    "A slow answer does not make a call time out: after a while (wait_s) the call returns a job handle "
    '(status "running", job_id) instead; call get_result with that job_id to collect the answer, and '
    "cancel_job to stop it. All calls are paid per token: never ask the same question again while its job "
    "runs; an identical call joins the running job instead of paying again."
)
BOTH_DESCRIPTION = (
    "Ask Fortytwo and Swarms the same question at once: both answers side by side, each labelled. One "
    "failing still returns the other's answer."
)
GET_RESULT_DESCRIPTION = (
    "Collect a job's outcome (an ask_* call that returned status running and a job_id), or read on in a "
    "long answer with offset. Free: the job was paid for once. Returns the handle again while it runs."
)
CANCEL_DESCRIPTION = "Stop a running job: its upstream request is aborted at once."


def create_server(
    settings: Settings,
    in_flight: InFlight | None = None,
    observer: Observer | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> SwarmServer:
    """Build the server; nothing is opened until the lifespan starts.

    `in_flight` tracks the tool calls, for the HTTP transport to drain them on shutdown; without one
    (stdio) they are not tracked. `observer` hears what the metrics count (nobody, over stdio).
    `clock` is the jobs' (what has expired): tests move it.
    """
    running: list[AppState] = []  # the lifespan's state, for resources (the SDK gives static ones no Context)

    def current() -> AppState:
        if not running:
            raise ResourceError(NOT_RUNNING)
        return running[0]

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        retry = RetryPolicy(
            max_retries=settings.max_retries,
            retry_server_errors=settings.retry_server_errors,
            send_floor_s=settings.send_floor,
        )
        instance = new_instance_id()
        async with (
            shared_state(settings, instance) as (store, board),
            settings.shared_client() as client,  # built in a thread while the server answers initialize
        ):
            ledger = Ledger((spec.name for spec in PROVIDERS), settings.budgets(), store)
            upstream = Upstream(
                client, settings.endpoints(), retry, settings.heartbeat, max_response_bytes=settings.max_response_bytes
            )
            jobs = JobRunner(
                ttl_s=settings.job_ttl,
                max_kept=settings.max_jobs,
                heartbeat_s=settings.heartbeat,
                board=board,
                instance=instance,
                observer=observer,
                clock=clock,
            )
            sharing = RequestSharing(
                upstream, ledger, settings.cache_ttl, observer, between_clients=settings.share_between_clients
            )
            state = AppState(settings, sharing, in_flight, jobs, observer)
            async with jobs.serving():
                running.append(state)
                try:
                    yield state
                finally:
                    running.remove(state)
                    with anyio.CancelScope(shield=True):
                        await jobs.aclose()

    tools = [
        tool(
            name=spec.tool_name,
            title=spec.title,
            description=spec.description,
            outputs=(Answer, AnswerPage, RunningJob),
        )
        for spec in PROVIDERS
    ]
    tools += [
        tool(
            name="ask_both",
            title="Ask Fortytwo and Swarms at once",
            description=BOTH_DESCRIPTION,
            outputs=(BothAnswers, AnswerPage, RunningJob),
        ),
        tool(
            name="get_result",
            title="Collect a job's outcome",
            description=GET_RESULT_DESCRIPTION,
            outputs=(Answer, BothAnswers, AnswerPage, RunningJob),
            annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
        ),
        tool(
            name="cancel_job",
            title="Cancel a running job",
            description=CANCEL_DESCRIPTION,
            outputs=(CancelOutcome,),
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
            ),
        ),
    ]
    server = SwarmServer(
        "swarm-inference-mcp",
        title="Swarm inference",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        log_level=settings.log_level,
        tools=tools,
        extensions=[Tasks()],
        middleware=[LegacyTasks()],
    )
    server.max_line_bytes = settings.max_line_bytes
    server.running = running

    @server.tool(
        name="list_models",
        title="List the providers' models",
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True),
    )
    async def list_models_tool(ctx: Context[AppState, Any]) -> CallToolResult:
        """The model ids each provider serves and its default: to pick a model for ask_fortytwo or ask_swarm."""
        return render_models(await list_models(ctx.request_context.lifespan_context))

    @server.resource(
        "swarm://usage",
        name="usage",
        title="Usage and budgets",
        description="Calls, errors and tokens per provider since this server started, and today's and this month's "
        "totals of every server process sharing the usage state file, with what is left of each token budget.",
        mime_type="application/json",
    )
    async def usage_resource() -> str:
        ledger = current().requests.ledger
        usage = {
            **view.snapshot(ledger).model_dump(mode="json"),
            **await view.shared_usage(ledger),
            **store_location(settings),
        }
        client = _reader.get()
        if client is not None:
            usage["client"] = await view.client_usage(ledger, client)
        return json.dumps(usage, indent=2)

    @server.resource(
        "swarm://models",
        name="models",
        title="Models per provider",
        description="The model ids each configured provider serves, as list_models returns them.",
        mime_type="application/json",
    )
    async def models_resource() -> str:
        return json.dumps(await list_models(current()), indent=2)

    @server.resource(
        "swarm://jobs",
        name="jobs",
        title="Jobs",
        description="The jobs this server knows (with Redis, every instance's): running ones, and finished ones "
        "whose handle was handed out (kept for SWARM_MCP_JOB_TTL), each with id, tool, providers, status, elapsed "
        "time and usage.",
        mime_type="application/json",
    )
    async def jobs_resource() -> str:
        return json.dumps(await current().jobs.listing(client_name(_reader.get())), indent=2)

    @server.resource(
        "swarm://jobs/{job_id}/answer",
        name="answer",
        title="A job's answer",
        description="The answer of one of your finished jobs, as much as fits one result from its start; its "
        "_meta says where the next part starts (swarm://jobs/{job_id}/answer/{offset}).",
        mime_type="text/plain",
    )
    async def answer_resource(job_id: str) -> str:
        return (await server.answer_part(job_id, 0))[0]

    @server.resource(
        "swarm://jobs/{job_id}/answer/{offset}",
        name="answer_from",
        title="A job's answer, read on",
        description="The part of one of your finished jobs' answer from a character offset.",
        mime_type="text/plain",
    )
    async def answer_from_resource(job_id: str, offset: str) -> str:
        return (await server.answer_part(job_id, int(offset) if offset.isdecimal() else 0))[0]

    return server


_ANSWER_URI = re.compile(r"swarm://jobs/([^/]+)/answer(?:/([0-9]{1,12}))?")
_reader: ContextVar[Client | None] = ContextVar("reader", default=None)
"""The HTTP client reading a resource, for the one resource that shows a client its own totals."""


class SwarmServer(MCPServer[AppState]):
    """The SDK gives static resources no Context; this passes on who reads them. Over stdio it reads
    stdin in bounded lines (`BoundedLines`). `running` holds the lifespan's state while it runs (what
    the metrics read when they are scraped)."""

    max_line_bytes: int = 16 * 1024 * 1024
    running: list[AppState]

    async def run_stdio_async(self) -> None:
        async with stdio_server(stdin=cast("Any", BoundedLines(sys.stdin.buffer, self.max_line_bytes))) as streams:
            low = self._lowlevel_server
            await low.run(streams[0], streams[1], low.create_initialization_options())

    async def read_resource(self, uri: Any, context: Any = None) -> Any:
        token = _reader.set(_client_of_context(context))
        try:
            part = _ANSWER_URI.fullmatch(str(uri))
            if part is None:
                return await super().read_resource(uri, context)
            offset = part.group(2)
            text, meta = await self.answer_part(part.group(1), int(offset) if offset else 0)
            return [ReadResourceContents(content=text, mime_type="text/plain", meta=meta)]
        finally:
            _reader.reset(token)

    async def answer_part(self, job_id: str, offset: int) -> tuple[str, dict[str, Any]]:
        """The part of the reader's own job's answer from `offset`, cut as a result's page is (`server.results`),
        and where it is: `offset`, `total_chars`, `next_offset` (left out at the end)."""
        if not self.running:
            raise ResourceError(NOT_RUNNING)
        state = self.running[0]
        try:
            reply = await state.jobs.get_result(job_id, 0, None, client_name(_reader.get()))
        except CallError as err:
            raise ResourceError(err.sentence) from None
        if isinstance(reply, Job):
            raise ResourceError(answer_not_there(job_id))
        if isinstance(reply, Failed):
            raise ResourceError(reply.failure.sentence)
        text = outcome_text(reply)
        start = min(offset, len(text))
        end = page_end(text, start, state.settings.max_result_chars // 2)
        meta: dict[str, Any] = {"offset": start, "total_chars": len(text)}
        if end < len(text):
            meta["next_offset"] = end
        return text[start:end], meta


def _client_of_context(ctx: Context[AppState, Any] | None) -> Client | None:
    """The HTTP client the gate authenticated (`server.gateway.serve`), or None (stdio, or no tokens)."""
    return client_of_request(
        ctx.request_context.request if ctx is not None and ctx.request_context is not None else None
    )


class BoundedLines:
    """stdin for the stdio transport, one bounded line at a time.

    The SDK reads stdin a line at a time with no bound, so a peer that writes gigabytes without a
    newline would grow the server's memory with it. This hands the SDK the same lines, except that a
    line longer than `max_bytes` is dropped as it arrives (nothing of it is kept), said in one WARNING,
    and the server goes on serving. (The SDK answers no line that is not JSON-RPC, so no parse error
    goes back: the request had no id it could be sent to.)
    """

    def __init__(self, source: BinaryIO, max_bytes: int) -> None:
        self._source = anyio.wrap_file(source)
        self._max = max_bytes

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        line = bytearray()
        dropping = False
        while chunk := await self._source.read1(_CHUNK):
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if dropping or len(line) + end - start > self._max:
                    log.warning("dropped a line of stdin longer than %d bytes (SWARM_MCP_MAX_LINE_BYTES)", self._max)
                else:
                    line += chunk[start:end]
                    yield line.decode("utf-8", errors="replace")
                line, dropping, start = bytearray(), False, end + 1
            if dropping:
                continue
            if len(line) + len(chunk) - start > self._max:
                line, dropping = bytearray(), True  # drop it as it comes; the newline ends it
            else:
                line += chunk[start:]
        if line and not dropping:
            yield line.decode("utf-8", errors="replace")
