"""Fortytwo Swarm Inference: many nodes answer, rank each other, and one answer comes back.

Schema: `ChatCompletionRequest` in shared/specs/fortytwo.openapi.json (`Authorization: Bearer`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from swarm_inference_mcp.tools.models import MAX_TOKENS, ChatArgs, ProviderSpec


class FortytwoArgs(ChatArgs):
    """Arguments of `ask_fortytwo`; each maps to the field of the same name upstream."""

    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS, description="Most tokens in the answer.")
    max_completion_tokens: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKENS,
        description="Newer name for max_tokens.",
    )
    response_format: dict[str, Any] | None = Field(
        default=None,
        description='Passed through, e.g. {"type": "json_object"}.',
    )


SPEC = ProviderSpec(
    name="fortytwo",
    label="Fortytwo",
    tool_name="ask_fortytwo",
    title="Ask the Fortytwo swarm",
    description=(
        "Ask the Fortytwo network's Swarm Inference: many nodes answer and rank each other, and the best "
        "answer comes back. A second opinion on a hard question; slow (often minutes), paid per token."
    ),
    args_model=FortytwoArgs,
    key_env="FORTYTWO_API_KEY",
    auth="bearer",
    default_base_url="https://api.fortytwo.network/v1",
    default_model="fortytwo-prime",
    default_max_concurrency=4,
)
