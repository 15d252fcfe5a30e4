"""A span per upstream request, with the GenAI semantic conventions, and the `traceparent` it sends.

Written against the OpenTelemetry API, which the MCP SDK already loads (its middleware makes the
span of each tool call, continuing a `traceparent` sent in the request's `_meta`). Until
`server.telemetry` installs an SDK, every span here is a no-op and nothing is sent upstream. A span
holds the provider, models, token counts, finish reasons, the job id and the error's kind: never
a prompt, an answer, an error's text or a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.trace import Span, SpanKind, StatusCode

from swarm_inference_mcp.tools.completion import Completion
from swarm_inference_mcp.tools.errors.tree import CallError

_tracer = trace.get_tracer("swarm_inference_mcp")
"""A proxy: it follows whichever tracer provider is installed, now or later."""


@dataclass
class RequestSpan:
    span: Span
    headers: dict[str, str] = field(default_factory=dict)
    """What the upstream request carries: the W3C `traceparent` of this span, when it is recorded."""

    def answered(self, completion: Completion) -> None:
        if not self.span.is_recording():  # no tracer provider installed: nothing to describe
            return
        attributes: dict[str, str | int | list[str]] = {}
        if completion.model:
            attributes["gen_ai.response.model"] = completion.model
        if completion.id:
            attributes["gen_ai.response.id"] = completion.id
        if completion.usage is not None:
            attributes["gen_ai.usage.input_tokens"] = completion.usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = completion.usage.completion_tokens
        reasons = [choice.finish_reason for choice in completion.choices if choice.finish_reason]
        if reasons:
            attributes["gen_ai.response.finish_reasons"] = reasons
        attributes["swarm_mcp.attempts"] = completion.attempts
        self.span.set_attributes(attributes)

    def failed(self, error: CallError) -> None:
        self.span.set_attribute("error.type", error.kind)
        if error.status is not None:
            self.span.set_attribute("http.response.status_code", error.status)
        self.span.set_status(StatusCode.ERROR, error.kind)


@contextmanager
def request_span(provider: str, model: str | None, job_id: str | None) -> Iterator[RequestSpan]:
    """The span of one upstream request, a child of the current one (the tool call's, in the job's task);
    an `CallError` raised inside marks it failed."""
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": provider, "gen_ai.provider.name": provider}
    if model:
        attributes["gen_ai.request.model"] = model
    if job_id:
        attributes["swarm_mcp.job.id"] = job_id
    name = f"chat {model}" if model else "chat"
    with _tracer.start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        request = RequestSpan(span)
        if span.is_recording():
            inject(request.headers)
        try:
            yield request
        except CallError as err:
            request.failed(err)
            raise
