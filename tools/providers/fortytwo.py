"""Fortytwo Swarm Inference: many nodes answer, rank each other, and one answer comes back.

Schema: `ChatCompletionRequest` in shared/specs/fortytwo.openapi.json (`Authorization: Bearer`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from swarm_inference_mcp.tools.models import MAX_TOKENS, ChatArgs, ProviderSpec


class FortytwoArgs(ChatArgs):
    """Arguments of `ask_fortytwo`; each maps to the field of the same name upstream."""

    max_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS, description="Upper bound on tokens in the answer."
    )
    max_completion_tokens: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKENS,
        description="Upper bound on completion tokens (newer name for max_tokens; either may be given).",
    )
    response_format: dict[str, Any] | None = Field(
        default=None,
        description='Output format object passed through as given, e.g. {"type": "json_object"}.',
    )


SPEC = ProviderSpec(
    name="fortytwo",
    label="Fortytwo",
    tool_name="ask_fortytwo",
    title="Ask the Fortytwo swarm",
    description=(
        "Ask the Fortytwo network's Swarm Inference for an answer: many independent nodes answer "
        "the question and rank each other's answers, and the best-ranked answer is returned. "
        "Use it for a second opinion on a hard question. It is slow (often minutes) and paid per token. "
        "Give `prompt` (optionally with `system`) or a `messages` conversation. "
        "Returns the answer text, with model, usage and latency as structured content."
    ),
    args_model=FortytwoArgs,
    key_env="FORTYTWO_API_KEY",
    auth="bearer",
    default_base_url="https://api.fortytwo.network/v1",
    default_model="fortytwo-prime",
    default_max_concurrency=4,
)
