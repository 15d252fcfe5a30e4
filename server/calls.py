"""What each tool does: the ask_* tools describe their upstream `Work`, which `Handles` runs as a
job (answering in time, or handing back a job handle); list_models asks each provider directly."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import anyio
from mcp_types import CallToolResult

from server.config import Settings
from server.drain import InFlight
from server.handles import Handles, Work
from server.results import error_result, failure, structured
from tools import PROVIDERS
from tools.completion import Completion
from tools.errors import UpstreamError, all_failed
from tools.jobs import Jobs, Origin, request_key
from tools.ledger import Caller, caller_name
from tools.models import (
    Answer,
    BothAnswers,
    BothArgs,
    ChatArgs,
    ErrorInfo,
    ProviderOutcome,
    ProviderSpec,
)
from tools.progress import ProgressFn


@dataclass(frozen=True)
class AppState:
    """What the lifespan hands every tool call."""

    settings: Settings
    jobs: Jobs
    in_flight: InFlight
    handles: Handles

    def wait_s(self, requested: float | None) -> float:
        """How long a call waits for its answer before it hands back a job handle."""
        return self.settings.wait if requested is None else requested


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


async def _answer(
    state: AppState,
    spec: ProviderSpec,
    body: dict[str, Any],
    timeout_s: float,
    *,
    on_progress: ProgressFn | None,
    origin: Origin,
) -> Answer:
    """Ask one provider; raises `UpstreamError`."""
    started = time.perf_counter()
    completion = await state.jobs.complete(spec.name, body, timeout_s=timeout_s, on_progress=on_progress, origin=origin)
    return _to_answer(spec, completion, _elapsed_ms(started))


def _to_answer(spec: ProviderSpec, completion: Completion, latency_ms: int) -> Answer:
    return Answer(
        provider=spec.name,
        model=completion.model,
        id=completion.id,
        text=completion.text,
        finish_reason=completion.finish_reason,
        usage=completion.usage,
        latency_ms=latency_ms,
        attempts=completion.attempts,
        choices=completion.choices if len(completion.choices) > 1 else None,
        cached=completion.cached,
    )


def answer_text(answer: Answer) -> str:
    """The answer as the calling model reads it: the text, or each choice labelled."""
    if not answer.choices:
        return answer.text
    return "\n\n".join(f"[choice {c.index + 1}]\n{c.text}" for c in answer.choices)


def provider_work(state: AppState, spec: ProviderSpec, args: ChatArgs, caller: Caller | None) -> Work:
    """`ask_fortytwo` / `ask_swarm`: one provider, one request body."""
    body = args.request_body(state.jobs.upstream.endpoints[spec.name].model)
    timeout_s = state.settings.deadline_s(args.timeout_s)

    async def run(on_progress: ProgressFn | None, job_id: str) -> CallToolResult:
        try:
            origin = Origin(spec.tool_name, job_id, caller)
            answer = await _answer(state, spec, body, timeout_s, on_progress=on_progress, origin=origin)
        except UpstreamError as err:
            return error_result(err)
        return structured(answer_text(answer), answer)

    request = request_key(spec.name, body)
    return Work(spec.tool_name, (spec.name,), spec.label, request, timeout_s, caller_name(caller), run)


def both_work(state: AppState, args: BothArgs, caller: Caller | None) -> Work:
    """`ask_both`: both providers at once; an error only when both fail."""
    models = {"fortytwo": args.fortytwo_model, "swarms": args.swarms_model}
    endpoints = state.jobs.upstream.endpoints
    messages = args.chat_messages()
    bodies = {
        spec.name: {"model": models[spec.name] or endpoints[spec.name].model, "messages": messages}
        for spec in PROVIDERS
    }
    timeout_s = state.settings.deadline_s(args.timeout_s)

    async def run(on_progress: ProgressFn | None, job_id: str) -> CallToolResult:
        return await _ask_both(state, bodies, timeout_s, on_progress, Origin("ask_both", job_id, caller))

    request = json.dumps(bodies, sort_keys=True, separators=(",", ":"))
    labels = " and ".join(spec.label for spec in PROVIDERS)
    providers = tuple(spec.name for spec in PROVIDERS)
    return Work("ask_both", providers, labels, request, timeout_s, caller_name(caller), run)


async def _ask_both(
    state: AppState,
    bodies: dict[str, dict[str, Any]],
    timeout_s: float,
    on_progress: ProgressFn | None,
    origin: Origin,
) -> CallToolResult:
    started = time.perf_counter()
    outcomes: dict[str, Answer | UpstreamError] = {}
    progress = _Monotonic(on_progress) if on_progress else None

    async def ask(spec: ProviderSpec) -> None:
        try:
            outcomes[spec.name] = await _answer(
                state, spec, bodies[spec.name], timeout_s, on_progress=progress, origin=origin
            )
        except UpstreamError as err:
            outcomes[spec.name] = err

    async with anyio.create_task_group() as tg:
        for spec in PROVIDERS:
            tg.start_soon(ask, spec)

    results: list[ProviderOutcome] = []
    sections: list[str] = []
    for spec in PROVIDERS:
        outcome = outcomes[spec.name]
        if isinstance(outcome, Answer):
            results.append(ProviderOutcome(provider=spec.name, answer=outcome))
            tokens = f", {outcome.usage.total_tokens} tokens" if outcome.usage else ""
            heading = f"## {spec.label} ({outcome.model or 'unknown model'}{tokens}, {outcome.latency_ms} ms)"
            sections.append(f"{heading}\n{answer_text(outcome)}")
        else:
            results.append(ProviderOutcome(provider=spec.name, error=ErrorInfo.model_validate(outcome.to_dict())))
            sections.append(f"## {spec.label} (failed)\n{outcome.sentence}")
    text = "\n\n".join(sections)
    errors = [outcome for result in results if isinstance(outcome := outcomes[result.provider], UpstreamError)]
    if len(errors) == len(results):
        return failure(text, all_failed(errors))
    return structured(text, BothAnswers(results=results, latency_ms=_elapsed_ms(started)))


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
    upstream = state.jobs.upstream
    listing: dict[str, dict[str, Any]] = {}

    async def one(spec: ProviderSpec) -> None:
        endpoint = upstream.endpoints[spec.name]
        entry: dict[str, Any] = {"configured": endpoint.api_key is not None, "default_model": endpoint.model}
        if endpoint.api_key is None:
            entry.update(models=None, error=f"not configured: set {spec.key_env}")
        else:
            try:
                entry.update(models=await upstream.list_models(spec.name, timeout_s=30.0), error=None)
            except UpstreamError as err:
                entry.update(models=None, error=err.sentence)
        listing[spec.name] = entry

    async with anyio.create_task_group() as tg:
        for spec in PROVIDERS:
            tg.start_soon(one, spec)
    return {"providers": {spec.name: listing[spec.name] for spec in PROVIDERS}}
