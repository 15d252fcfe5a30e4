"""What each tool does: the ask_* tools describe their upstream `Work`, which `Handles` runs as a
job (answering in time, or handing back a job handle); list_models asks each provider directly."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio
from mcp_types import CallToolResult

from server.config import Settings
from server.drain import InFlight, Untracked
from server.handles import Handles, Work
from server.results import error_result, failure, structured
from tools import PROVIDERS
from tools.completion import Completion
from tools.errors import UpstreamError, all_failed
from tools.jobs import Ask, Jobs, Origin
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
    in_flight: InFlight | Untracked
    handles: Handles

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
) -> tuple[Answer, dict[str, Any]]:
    """Ask one provider: its answer, and how it came about (its entry in `TRACE_META`). Raises `UpstreamError`."""
    started = time.perf_counter()
    completion = await state.jobs.complete(ask, timeout_s=timeout_s, on_progress=on_progress, origin=origin)
    trace: dict[str, Any] = {"latency_ms": _elapsed_ms(started), "attempts": completion.attempts}
    if completion.model is not None:
        trace["model"] = completion.model
    if completion.id is not None:
        trace["id"] = completion.id
    return _to_answer(completion), trace


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


def answer_text(answer: Answer) -> str:
    """The answer as the calling model reads it: the text, or each choice labelled."""
    if not answer.choices:
        return answer.text
    return "\n\n".join(f"[choice {c.index + 1}]\n{c.text}" for c in answer.choices)


def provider_work(state: AppState, spec: ProviderSpec, args: ChatArgs, caller: Caller | None) -> Work:
    """`ask_fortytwo` / `ask_swarm`: one provider, one request body."""
    ask = Ask.of(spec.name, args.request_body(state.jobs.upstream.endpoints[spec.name].model))
    timeout_s = state.settings.deadline_s(args.timeout_s)

    async def run(on_progress: ProgressFn | None, job_id: str) -> CallToolResult:
        try:
            origin = Origin(spec.tool_name, job_id, caller)
            answer, trace = await _answer(state, spec, ask, timeout_s, on_progress=on_progress, origin=origin)
        except UpstreamError as err:
            return error_result(err)
        return structured(answer_text(answer), answer, {spec.name: trace})

    return Work(spec.tool_name, (spec.name,), spec.label, ask.key, timeout_s, caller_name(caller), run)


def both_work(state: AppState, args: BothArgs, caller: Caller | None) -> Work:
    """`ask_both`: both providers at once; an error only when both fail."""
    models = {"fortytwo": args.fortytwo_model, "swarms": args.swarms_model}
    endpoints = state.jobs.upstream.endpoints
    messages = args.chat_messages()
    asks = {
        spec.name: Ask.of(spec.name, {"model": models[spec.name] or endpoints[spec.name].model, "messages": messages})
        for spec in PROVIDERS
    }
    timeout_s = state.settings.deadline_s(args.timeout_s)

    async def run(on_progress: ProgressFn | None, job_id: str) -> CallToolResult:
        return await _ask_both(state, asks, timeout_s, on_progress, Origin("ask_both", job_id, caller))

    request = "\n".join(ask.key for ask in asks.values())
    labels = " and ".join(spec.label for spec in PROVIDERS)
    providers = tuple(spec.name for spec in PROVIDERS)
    return Work("ask_both", providers, labels, request, timeout_s, caller_name(caller), run)


async def _ask_both(
    state: AppState,
    asks: dict[str, Ask],
    timeout_s: float,
    on_progress: ProgressFn | None,
    origin: Origin,
) -> CallToolResult:
    outcomes: dict[str, Answer | UpstreamError] = {}
    traces: dict[str, dict[str, Any]] = {}
    progress = _Monotonic(on_progress) if on_progress else None

    async def ask(spec: ProviderSpec) -> None:
        try:
            outcomes[spec.name], traces[spec.name] = await _answer(
                state, spec, asks[spec.name], timeout_s, on_progress=progress, origin=origin
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
            trace = traces[spec.name]
            heading = f"## {spec.label} ({trace.get('model', 'unknown model')}{tokens}, {trace['latency_ms']} ms)"
            sections.append(f"{heading}\n{answer_text(outcome)}")
        else:
            results.append(ProviderOutcome(provider=spec.name, error=ErrorInfo.model_validate(outcome.to_dict())))
            sections.append(f"## {spec.label} (failed)\n{outcome.sentence}")
    text = "\n\n".join(sections)
    errors = [outcome for result in results if isinstance(outcome := outcomes[result.provider], UpstreamError)]
    if len(errors) == len(results):
        return failure(text, all_failed(errors))
    ordered = {spec.name: traces[spec.name] for spec in PROVIDERS if spec.name in traces}  # Fortytwo first
    return structured(text, BothAnswers(results=results), ordered)


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
