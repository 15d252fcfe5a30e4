"""The two shapes a tool result takes, and the one place an `UpstreamError` becomes an MCP error result.

An error result carries our one sentence as its only text and no structured content: hosts built
on the TypeScript SDK check any structured content against the tool's output schema (error results
included), and some clients show structured content instead of the text. Programs read the error's
kind, retryability and wait from `_meta["swarm-inference-mcp/error"]`, which no client validates.
Failures are returned rather than raised because a raised `ToolError` cannot carry that `_meta`.
"""

from __future__ import annotations

from typing import Any

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from tools.errors import UpstreamError

ERROR_META = "swarm-inference-mcp/error"
"""The `_meta` key of an error result's structured form (`ErrorInfo`, or `all_failed` for ask_both)."""


def error_result(err: UpstreamError) -> CallToolResult:
    """A failure: one sentence for people, its structured form in `_meta` for programs."""
    return failure(err.sentence, err.to_dict())


def failure(text: str, error: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True, meta={ERROR_META: error})


def structured(text: str, content: BaseModel) -> CallToolResult:
    """A successful result: `content` without the fields that do not apply (see `server.schemas`)."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=content.model_dump(mode="json", exclude_none=True),
    )
