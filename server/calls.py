"""What each tool does: the ask_* tools describe their upstream `Work`, whose `run` produces the
job's `Outcome` (`server.jobs.runner` runs it as a job); list_models asks each provider directly."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio

from swarm_inference_mcp.server.clients import Client, client_name
from swarm_inference_mcp.server.config import Settings
from swarm_inference_mcp.server.drain import InFlight, Untracked
from swarm_inference_mcp.server.jobs.outcome import Answered, Failed, Failure, Outcome, SideFailed, Sides, Trace
from swarm_inference_mcp.server.jobs.runner import JobRunner
from swarm_inference_mcp.server.jobs.sharing import Ask, Origin, RequestSharing
from swarm_inference_mcp.server.jobs.table import Work
from swarm_inference_mcp.server.observe import Observer
from swarm_inference_mcp.tools import PROVIDERS
from swarm_inference_mcp.tools.completion import Completion
from swarm_inference_mcp.tools.errors.tree import CallError
from swarm_inference_mcp.tools.models import Answer, ChatArgs, ProviderSpec
from swarm_inference_mcp.tools.progress import ProgressFn
from swarm_inference_mcp.tools.providers.both import BothArgs


@dataclass(frozen=True)
class AppState:
    """What the lifespan hands every tool call."""

    settings: Settings
    requests: RequestSharing
    in_flight: InFlight | Untracked
    jobs: JobRunner
    observer: Observer | None
    """What the metrics count, over HTTP; None over stdio, where nothing is served."""

    def wait_s(self, requested: float | None) -> float:
        """How long a call waits for its answer before it hands back a job handle."""
        return self.settings.wait if requested is None else requested


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


async def _answer(
    state: AppState,
    spec: ProviderSpec,
    ask: Ask,
    timeout_s: float,
    *,
    on_progress: ProgressFn | None,
    origin: Origin,
) -> Answered:
    """Ask one provider: its answer, and how it came about. Raises `CallError`."""
    started = time.perf_counter()
    completion = await state.requests.complete(ask, timeout_s=timeout_s, on_progress=on_progress, origin=origin)
    trace = Trace(_elapsed_ms(started), completion.attempts, completion.model, completion.id)
    return Answered(spec.name, _to_answer(completion), trace)


def _to_answer(completion: Completion) -> Answer:
    choices = completion.choices
    return Answer(
        text=completion.text,
        finish_reason=_early(completion.finish_reason),
        usage=completion.usage,
        choices=[c.model_copy(update={"finish_reason": _early(c.finish_reason)}) for c in choices]
        if len(choices) > 1
        else None,
        cached=True if completion.cached else None,
    )


def _early(finish_reason: str | None) -> str | None:
    """A finish reason worth a field: not `stop`, which nearly every answer would carry and every
    client would check on every call."""
    return None if finish_reason == "stop" else finish_reason


def provider_work(state: AppState, spec: ProviderSpec, args: ChatArgs, client: Client | None) -> Work:
    """`ask_fortytwo` / `ask_swarm`: one provider, one request body."""
    ask = state.requests.ask(spec.name, args.request_body(state.requests.upstream.endpoints[spec.name].model), client)
    timeout_s = state.settings.deadline_s(args.timeout_s)

    async def run(on_progress: ProgressFn | None, job_id: str) -> Outcome:
        try:
            origin = Origin(spec.tool_name, job_id, client)
            return await _answer(state, spec, ask, timeout_s, on_progress=on_progress, origin=origin)
        except CallError as err:
            return Failed.of(err)

    return Work(spec.tool_name, (spec.name,), spec.label, ask.key, timeout_s, client_name(client), run)


def both_work(state: AppState, args: BothArgs, client: Client | None) -> Work:
    """`ask_both`: both providers at once; an error only when both fail."""
    endpoints = state.requests.upstream.endpoints
    messages = args.chat_messages()
    asks = {
        spec.name: state.requests.ask(
            spec.name, {"model": args.model_for(spec.name) or endpoints[spec.name].model, "messages": messages}, client
        )
        for spec in PROVIDERS
    }
    timeout_s = state.settings.deadline_s(args.timeout_s)

    async def run(on_progress: ProgressFn | None, job_id: str) -> Outcome:
        return await _ask_both(state, asks, timeout_s, on_progress, Origin("ask_both", job_id, client))

    request = "\n".join(ask.key for ask in asks.values())
    labels = " and ".join(spec.label for spec in PROVIDERS)
    providers = tuple(spec.name for spec in PROVIDERS)
    return Work("ask_both", providers, labels, request, timeout_s, client_name(client), run)


async def _ask_both(
    state: AppState,
    asks: dict[str, Ask],
    timeout_s: float,
    on_progress: ProgressFn | None,
    origin: Origin,
) -> Outcome:
    sides: dict[str, Answered | SideFailed] = {}
    progress = _Monotonic(on_progress) if on_progress else None

    async def ask(spec: ProviderSpec) -> None:
        try:
            sides[spec.name] = await _answer(
                state, spec, asks[spec.name], timeout_s, on_progress=progress, origin=origin
            )
        except CallError as err:
            sides[spec.name] = SideFailed(spec.name, Failure.of(err))

    async with anyio.create_task_group() as tg:
        for spec in PROVIDERS:
            tg.start_soon(ask, spec)

    ordered = tuple(sides[spec.name] for spec in PROVIDERS)  # Fortytwo first
    failed = tuple(side for side in ordered if isinstance(side, SideFailed))
    if len(failed) == len(ordered):
        return Failed.every_side(failed)
    return Sides(ordered)


class _Monotonic:
    """Merges two providers' progress into one rising sequence, as MCP requires."""

    def __init__(self, send: ProgressFn) -> None:
        self._send = send
        self._count = 0

    async def __call__(self, progress: float, message: str) -> None:
        self._count += 1
        await self._send(float(self._count), message)


async def list_models(state: AppState) -> dict[str, Any]:
    """Each provider's model ids (cached a few minutes); an unconfigured or failing one says so."""
    upstream = state.requests.upstream
    listing: dict[str, dict[str, Any]] = {}

    async def one(spec: ProviderSpec) -> None:
        endpoint = upstream.endpoints[spec.name]
        entry: dict[str, Any] = {"configured": endpoint.api_key is not None, "default_model": endpoint.model}
        if endpoint.api_key is None:
            entry.update(models=None, error=f"not configured: set {spec.key_env}")
        else:
            try:
                entry.update(models=await upstream.list_models(spec.name, timeout_s=30.0), error=None)
            except CallError as err:
                entry.update(models=None, error=err.sentence)
        listing[spec.name] = entry

    async with anyio.create_task_group() as tg:
        for spec in PROVIDERS:
            tg.start_soon(one, spec)
    return {"providers": {spec.name: listing[spec.name] for spec in PROVIDERS}}
