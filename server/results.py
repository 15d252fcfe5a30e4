"""The two shapes a tool result takes, and the one place an `UpstreamError` becomes an MCP error result.

An error result carries our one sentence as its only text and no structured content: hosts built
on the TypeScript SDK check any structured content against the tool's output schema (error results
included), and some clients show structured content instead of the text. Programs read the error's
kind, retryability and wait from `_meta["swarm-inference-mcp/error"]`, which no client validates.
Failures are returned rather than raised because a raised `ToolError` cannot carry that `_meta`.

An answer's structured content holds what a caller acts on (text, usage); how it came about is in
`_meta["swarm-inference-mcp/trace"]`, by provider: `{"fortytwo": {"model": ..., "id": ...,
"latency_ms": ..., "attempts": ...}}`. Clients check structured content against the output schema
on every call, field by field, and nobody acts on a latency, so it costs nothing there.
"""

from __future__ import annotations

from typing import Any

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from tools.errors import UpstreamError

ERROR_META = "swarm-inference-mcp/error"
"""The `_meta` key of an error result's structured form (`ErrorInfo`, or `all_failed` for ask_both)."""
TRACE_META = "swarm-inference-mcp/trace"
"""The `_meta` key of how each provider's answer came about (see the module docstring)."""


def error_result(err: UpstreamError) -> CallToolResult:
    """A failure: one sentence for people, its structured form in `_meta` for programs."""
    return failure(err.sentence, err.to_dict())


def failure(text: str, error: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True, meta={ERROR_META: error})


def structured(text: str, content: BaseModel, trace: dict[str, Any] | None = None) -> CallToolResult:
    """A successful result: `content` without the fields that do not apply (see `server.schemas`), and
    the providers' traces, if any, in `_meta`."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=content.model_dump(mode="json", exclude_none=True),
        meta={TRACE_META: trace} if trace else None,
    )
