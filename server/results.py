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

from mcp_types import CallToolResult, ResourceLink, TextContent
from pydantic import BaseModel

from swarm_inference_mcp.server.jobs.handles import CancelReport, cancel_words, running_job, working_words
from swarm_inference_mcp.server.jobs.outcome import Answered, Collected, Failed, Outcome, SideFailed, Sides
from swarm_inference_mcp.server.jobs.table import Job
from swarm_inference_mcp.tools import PROVIDERS
from swarm_inference_mcp.tools.models import Answer, AnswerPage, BothAnswers, ProviderOutcome

Reply = Outcome | Collected | Job | CancelReport
"""What a tool call produced, before it is rendered: an outcome (read from its job, or not), a job
(running, or finished and kept), or what a cancel did."""
SURE_ROOM = 10_000
"""More than everything of a result but its text ever takes (usage, trace, labels of ask_both)."""
ENVELOPE_CHARS = 200
"""Room for the JSON-RPC envelope around a result (`{"jsonrpc": "2.0", "id": …, "result": …}`)."""
ERROR_META = "swarm-inference-mcp/error"
"""The `_meta` key of an error result's structured form (`ErrorInfo`, or `all_failed` for ask_both)."""
TRACE_META = "swarm-inference-mcp/trace"
"""The `_meta` key of how each provider's answer came about (see the module docstring)."""
_LABELS = {spec.name: spec.label for spec in PROVIDERS}
RELATED_TASK_META = "io.modelcontextprotocol/related-task"


def task_status(job: Job) -> str:
    """A job's task status: working until it has an outcome; a cancelled job is cancelled, and every other
    outcome, a tool error included, is completed (its result says `isError`)."""
    if job.outcome is None:
        return "working"
    if isinstance(job.outcome, Failed) and job.outcome.kind == "cancelled":
        return "cancelled"
    return "completed"


def task_2026(job: Job, *, ttl_ms: int, poll_ms: int, limit: int, created: bool = False) -> dict[str, Any]:
    """The Tasks extension's task: `CreateTaskResult` when `created`, else `tasks/get`'s `DetailedTask`
    with the tool's result inline once completed."""
    task = {
        "resultType": "task" if created else "complete",
        **_task(job),
        "ttlMs": ttl_ms,
        "pollIntervalMs": poll_ms,
    }
    if not created and job.outcome is not None and task["status"] == "completed":
        task["result"] = _wire(render(job, 0, limit))
    return task


def task_2025(job: Job, *, ttl_ms: int, poll_ms: int) -> dict[str, Any]:
    """The 2025-11-25 task, as `tasks/get`, `tasks/list` and `tasks/cancel` return it."""
    return {**_task(job), "ttl": ttl_ms, "pollInterval": poll_ms}


def task_payload(job_id: str, outcome: Outcome, limit: int) -> dict[str, Any]:
    """`tasks/result` (2025-11-25): the tool's own result, marked as the task's (a long answer's first page)."""
    reply: Reply = outcome if isinstance(outcome, Failed) else Collected(job_id, outcome)
    result = _wire(render(reply, 0, limit))
    result["_meta"] = {**result.get("_meta", {}), RELATED_TASK_META: {"taskId": job_id}}
    return result


def _task(job: Job) -> dict[str, Any]:
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


def render(reply: Reply, forget_after_s: float, limit: int) -> CallToolResult:
    """A call's outcome, the handle of its job still running, or what a cancel did; an answer read from
    its job that is longer than `limit` characters (of the result's JSON) as one page of it."""
    if isinstance(reply, CancelReport):
        return _structured(*cancel_words(reply))
    if isinstance(reply, Job):
        if reply.outcome is None:
            return _structured(*running_job(reply, forget_after_s))
        reply = reply.outcome if isinstance(reply.outcome, Failed) else Collected(reply.id, reply.outcome)
    if isinstance(reply, Collected):
        whole = _whole(reply.outcome)
        if reply.offset == 0 and _size(whole) <= limit:
            return whole
        return _page(reply, limit)
    if isinstance(reply, Failed):
        return _failure(reply, limit)
    return _whole(reply)


def fits(outcome: Outcome, limit: int) -> bool:
    """Whether the whole outcome fits one result of `limit` characters (a failure always does). An answer
    whose text, carried at most three times (the text, the structured `text`, and with several choices
    the first again among them) and escaped at worst (6 characters each), still leaves `SURE_ROOM` is
    not rendered to be measured: nearly every answer."""
    if isinstance(outcome, Failed):
        return True
    if len(outcome_text(outcome)) * 18 + SURE_ROOM <= limit:
        return True
    return _size(_whole(outcome)) <= limit


def _whole(outcome: Answered | Sides) -> CallToolResult:
    if isinstance(outcome, Sides):
        return _sides(outcome)
    return _structured(answer_text(outcome.answer), outcome.answer, {outcome.provider: _trace(outcome)})


def _trace(answered: Answered) -> dict[str, Any]:
    return answered.trace.model_dump(exclude_none=True)


def _size(result: CallToolResult) -> int:
    """The result's length as a host receives it: characters of its JSON, and the JSON-RPC envelope's."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True)) + ENVELOPE_CHARS


def _page(collected: Collected, limit: int) -> CallToolResult:
    """The page of a long answer from `collected.offset`: as much as fits `limit` with its text carried
    twice (the text content and the structured `text`), cut at a paragraph or line break where there is one."""
    text = outcome_text(collected.outcome)
    start = min(collected.offset, len(text))
    budget = limit // 2
    while True:
        end = page_end(text, start, budget)
        result = _page_result(collected, text, start, end)
        excess = _size(result) - limit
        if excess <= 0 or end - start <= 1:
            return result
        budget = max(1, end - start - excess // 2 - 1)  # escaping took more room: shrink (the text is there twice)


def page_end(text: str, start: int, budget: int) -> int:
    """Where a page of at most `budget` characters from `start` ends: after the last paragraph break, else
    line break, else space, in its second half; else at the budget."""
    end = start + budget
    if end >= len(text):
        return len(text)
    for separator in ("\n\n", "\n", " "):
        cut = text.rfind(separator, start + budget // 2, end)
        if cut >= 0:
            return cut + len(separator)
    return end


def _page_result(collected: Collected, text: str, start: int, end: int) -> CallToolResult:
    job_id, outcome, total = collected.job_id, collected.outcome, len(text)
    shown = f"Characters {start + 1:,}–{end:,} of {total:,}"
    if end >= total:
        footer = f"\n\n[{shown}: the end of the answer.]"
    else:
        footer = (
            f'\n\n[{shown}; {total - end:,} more. To read on, call get_result with job_id "{job_id}" and offset {end}.]'
        )
    page = AnswerPage(
        job_id=job_id,
        text=text[start:end],
        offset=start,
        total_chars=total,
        next_offset=end if end < total else None,
        usage=outcome.answer.usage if isinstance(outcome, Answered) else None,
    )
    traces = {outcome.provider: _trace(outcome)} if isinstance(outcome, Answered) else _traces(outcome)
    link = ResourceLink(
        name="answer",
        uri=answer_uri(job_id),
        mime_type="text/plain",
        description="The whole answer, read in parts of the same size.",
    )
    return CallToolResult(
        content=[TextContent(type="text", text=text[start:end] + footer), link],
        structured_content=page.model_dump(mode="json", exclude_none=True),
        meta={TRACE_META: traces} if traces else None,
    )


def answer_uri(job_id: str, offset: int = 0) -> str:
    """The resource of a job's answer (from `offset`): what a page's resource link names."""
    return f"swarm://jobs/{job_id}/answer" + (f"/{offset}" if offset else "")


def outcome_text(outcome: Answered | Sides) -> str:
    """The whole answer as the calling model reads it (what its pages are cut from)."""
    return answer_text(outcome.answer) if isinstance(outcome, Answered) else sides_text(outcome.sides)


def outcome_label(reply: Reply, *, tasked: bool) -> str:
    """A call's outcome in a word, for the metrics: `answer` (a normal result), `handle` or `task` (its job
    runs on), or the failure's kind."""
    if isinstance(reply, Job) and reply.outcome is None:
        return "task" if tasked else "handle"
    if isinstance(reply, Job):
        return "answer" if not isinstance(reply.outcome, Failed) else reply.outcome.kind
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
    return _structured(sides_text(outcome.sides), BothAnswers(results=results), _traces(outcome))


def _traces(outcome: Sides) -> dict[str, Any]:
    return {side.provider: _trace(side) for side in outcome.sides if isinstance(side, Answered)}


def _failure(outcome: Failed, limit: int) -> CallToolResult:
    """A failure: one sentence for people, its structured form in `_meta` for programs. What a broken
    stream delivered before it failed (`partial_text`) is cut to a quarter of `limit`."""
    text = sides_text(outcome.sides) if outcome.sides else outcome.failure.sentence
    info = _clipped(outcome.failure.info, limit // 4)
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True, meta={ERROR_META: info})


def _clipped(info: Any, chars: int) -> Any:
    """`info` with every `partial_text` in it cut to `chars`."""
    if isinstance(info, list):
        return [_clipped(item, chars) for item in info]
    if not isinstance(info, dict):
        return info
    clipped = {key: _clipped(value, chars) for key, value in info.items()}
    partial = clipped.get("partial_text")
    if isinstance(partial, str) and len(partial) > chars:
        clipped["partial_text"] = partial[:chars]
    return clipped


def _structured(text: str, content: BaseModel, trace: dict[str, Any] | None = None) -> CallToolResult:
    """A successful result: `content` without the fields that do not apply (see `server.schemas`), and
    the providers' traces, if any, in `_meta`."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=content.model_dump(mode="json", exclude_none=True),
        meta={TRACE_META: trace} if trace else None,
    )


def render_models(listing: dict[str, Any]) -> CallToolResult:
    """list_models: a line per provider for the model to read, its default first; the data as structured content."""
    lines = []
    for spec in PROVIDERS:
        entry = listing["providers"][spec.name]
        default = entry["default_model"]
        if "models" in entry:
            others = [model for model in entry["models"] if model != default]
            listed = ", ".join(others) if others else "no others"
            lines.append(f"{spec.label} ({spec.tool_name}): default {default}; also {listed}.")
        else:
            lines.append(f"{spec.label}: {entry['error']}.")
    return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))], structured_content=listing)
