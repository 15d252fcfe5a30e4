"""The one place where what a call produced becomes what a client sees: a `CallToolResult`, or a task.

An outcome (`server.jobs.outcome`) renders as an answer, `ask_both`'s answers side by side, or an error
result; a job still running renders as its handle, or, for a host that runs long calls itself, as a
task of either generation (`task_2026`: the Tasks extension's flat task with its result inline;
`task_2025`: the 2025-11-25 task, whose result `task_payload` gives). Nothing else builds these,
and nothing reads one back.

An error result carries our one sentence as its only text and no structured content: hosts built
on the TypeScript SDK check any structured content against the tool's output schema (error results
included), and some clients show structured content instead of the text. Programs read the error's
kind, retryability and wait from `_meta["swarm-inference-mcp/error"]`, which no client validates.
Failures are returned rather than raised because a raised `ToolError` cannot carry that `_meta`.

An answer's structured content holds what a caller acts on (text, usage); how it came about is in
`_meta["swarm-inference-mcp/trace"]`, by provider: `{"fortytwo": {"model": ..., "id": ...,
"latency_ms": ..., "attempts": ...}}`, since clients check structured content field by field on
every call and nobody acts on a latency.
"""

from __future__ import annotations

import time
from typing import Any

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from swarm_inference_mcp.server.jobs.board import JobRecord
from swarm_inference_mcp.server.jobs.handles import CancelReport, cancel_words, running_job, working_words
from swarm_inference_mcp.server.jobs.outcome import Answered, Failed, Outcome, SideFailed, Sides
from swarm_inference_mcp.tools import PROVIDERS
from swarm_inference_mcp.tools.models import Answer, BothAnswers, ProviderOutcome

ERROR_META = "swarm-inference-mcp/error"
"""The `_meta` key of an error result's structured form (`ErrorInfo`, or `all_failed` for ask_both)."""
TRACE_META = "swarm-inference-mcp/trace"
"""The `_meta` key of how each provider's answer came about (see the module docstring)."""
_LABELS = {spec.name: spec.label for spec in PROVIDERS}
RELATED_TASK_META = "io.modelcontextprotocol/related-task"


def task_status(job: JobRecord) -> str:
    """A job's task status: working until it has an outcome; a cancelled job is cancelled, and every other
    outcome, a tool error included, is completed (its result says `isError`)."""
    if job.outcome is None:
        return "working"
    if isinstance(job.outcome, Failed) and job.outcome.kind == "cancelled":
        return "cancelled"
    return "completed"


def task_2026(job: JobRecord, *, ttl_ms: int, poll_ms: int, created: bool = False) -> dict[str, Any]:
    """The Tasks extension's task: `CreateTaskResult` when `created`, else `tasks/get`'s `DetailedTask`
    with the tool's result inline once completed."""
    task = {
        "resultType": "task" if created else "complete",
        **_task(job),
        "ttlMs": ttl_ms,
        "pollIntervalMs": poll_ms,
    }
    if not created and job.outcome is not None and task["status"] == "completed":
        task["result"] = _wire(render(job.outcome, 0))
    return task


def task_2025(job: JobRecord, *, ttl_ms: int, poll_ms: int) -> dict[str, Any]:
    """The 2025-11-25 task, as `tasks/get`, `tasks/list` and `tasks/cancel` return it."""
    return {**_task(job), "ttl": ttl_ms, "pollInterval": poll_ms}


def task_payload(job_id: str, outcome: Outcome) -> dict[str, Any]:
    """`tasks/result` (2025-11-25): the tool's own result, marked as the task's."""
    result = _wire(render(outcome, 0))
    result["_meta"] = {**result.get("_meta", {}), RELATED_TASK_META: {"taskId": job_id}}
    return result


def _task(job: JobRecord) -> dict[str, Any]:
    status = task_status(job)
    if job.outcome is None:
        message = job.message or working_words(job)
    elif isinstance(job.outcome, Failed):
        message = job.outcome.failure.sentence
    else:
        message = "The answer is in the result."
    changed = job.finished or job.updated or job.started
    return {
        "taskId": job.id,
        "status": status,
        "statusMessage": message,
        "createdAt": _iso(job.started),
        "lastUpdatedAt": _iso(max(changed, job.started)),
    }


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _wire(result: CallToolResult) -> dict[str, Any]:
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


def render(reply: Outcome | JobRecord | CancelReport, forget_after_s: float) -> CallToolResult:
    """A call's outcome, the handle of its job still running, or what a cancel did."""
    if isinstance(reply, CancelReport):
        return _structured(*cancel_words(reply))
    if isinstance(reply, JobRecord):
        text, running = running_job(reply, forget_after_s)
        return _structured(text, running)
    if isinstance(reply, Answered):
        return _structured(
            answer_text(reply.answer), reply.answer, {reply.provider: reply.trace.model_dump(exclude_none=True)}
        )
    if isinstance(reply, Sides):
        return _sides(reply)
    return _failure(reply)


def outcome_label(reply: Outcome | JobRecord | CancelReport, *, tasked: bool) -> str:
    """A call's outcome in a word, for the metrics: `answer` (a normal result), `handle` or `task` (its job
    runs on), or the failure's kind."""
    if isinstance(reply, JobRecord):
        return "task" if tasked else "handle"
    if isinstance(reply, Failed):
        return reply.kind
    return "answer"


def answer_text(answer: Answer) -> str:
    """The answer as the calling model reads it: the text, or each choice labelled."""
    if not answer.choices:
        return answer.text
    return "\n\n".join(f"[choice {c.index + 1}]\n{c.text}" for c in answer.choices)


def sides_text(sides: tuple[Answered | SideFailed, ...]) -> str:
    """`ask_both`'s text: each provider's answer (or failure) under a heading with model, tokens and latency."""
    sections = []
    for side in sides:
        label = _LABELS.get(side.provider, side.provider)
        if isinstance(side, Answered):
            tokens = f", {side.answer.usage.total_tokens} tokens" if side.answer.usage else ""
            model = side.trace.model or "unknown model"
            sections.append(f"## {label} ({model}{tokens}, {side.trace.latency_ms} ms)\n{answer_text(side.answer)}")
        else:
            sections.append(f"## {label} (failed)\n{side.failure.sentence}")
    return "\n\n".join(sections)


def _sides(outcome: Sides) -> CallToolResult:
    results = [
        ProviderOutcome(provider=side.provider, answer=side.answer)
        if isinstance(side, Answered)
        else ProviderOutcome(provider=side.provider, error=side.info)
        for side in outcome.sides
    ]
    traces = {
        side.provider: side.trace.model_dump(exclude_none=True) for side in outcome.sides if isinstance(side, Answered)
    }
    return _structured(sides_text(outcome.sides), BothAnswers(results=results), traces)


def _failure(outcome: Failed) -> CallToolResult:
    """A failure: one sentence for people, its structured form in `_meta` for programs."""
    text = sides_text(outcome.sides) if outcome.sides else outcome.failure.sentence
    return CallToolResult(
        content=[TextContent(type="text", text=text)], is_error=True, meta={ERROR_META: outcome.failure.info}
    )


def _structured(text: str, content: BaseModel, trace: dict[str, Any] | None = None) -> CallToolResult:
    """A successful result: `content` without the fields that do not apply (see `server.schemas`), and
    the providers' traces, if any, in `_meta`."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=content.model_dump(mode="json", exclude_none=True),
        meta={TRACE_META: trace} if trace else None,
    )
