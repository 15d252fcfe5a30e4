"""The Swarms API's OpenAI-compatible chat completions, with its `max_loops` extension.

Schema: `ChatCompletionRequest` in shared/specs/swarms.openapi.json (`x-api-key` header).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from swarm_inference_mcp.tools.models import MAX_MESSAGES, MAX_TEXT, MAX_TOKENS, ChatArgs, Message, ProviderSpec


class TextPart(BaseModel):
    """A text part of a message's content."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = Field(description='Always "text".')
    text: str = Field(max_length=MAX_TEXT, description="The text.")


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_TEXT, description="An https URL or a data: URL of the image.")
    detail: Literal["auto", "low", "high"] | None = Field(default=None, description="Image detail level.")


class ImagePart(BaseModel):
    """An image part of a message's content, in the OpenAI shape."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["image_url"] = Field(description='Always "image_url".')
    image_url: ImageURL = Field(description="Where the image is.")


class SwarmsMessage(Message):
    """A chat message; Swarms also takes a participant name and content as a list of parts."""

    content: str | list[TextPart | ImagePart] = Field(  # type: ignore[assignment]  # widens the base field
        min_length=1,
        description="Text, or parts: {type: text, text} or {type: image_url, image_url: {url}}.",
    )
    name: str | None = Field(default=None, min_length=1, max_length=64, description="Optional name of the participant.")


class SwarmsArgs(ChatArgs):
    """Arguments of `ask_swarm`; each maps to the field of the same name upstream."""

    messages: list[SwarmsMessage] | None = Field(  # type: ignore[assignment]  # narrows to Swarms' message shape
        default=None,
        min_length=1,
        max_length=MAX_MESSAGES,
        description="A conversation instead of prompt: [{role: system|user|assistant, content, name?}]; content "
        "is text or parts: {type: text, text} or {type: image_url, image_url: {url}}.",
    )
    temperature: float | None = Field(default=None, ge=0, le=2, description="0 to 2.")
    top_p: float | None = Field(default=None, ge=0, le=1, description="0 to 1.")
    n: int | None = Field(default=None, ge=1, le=10, description="Answers to generate, 1 to 10.")
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS, description="Most tokens in the answer.")
    max_completion_tokens: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKENS,
        description="Most completion tokens; wins over max_tokens.",
    )
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, description="-2 to 2.")
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, description="-2 to 2.")
    user: str | None = Field(default=None, min_length=1, max_length=256, description="End-user id, for abuse tracking.")
    max_loops: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Reasoning loops of the Swarms agent (default 1).",
    )


SPEC = ProviderSpec(
    name="swarms",
    label="Swarms",
    tool_name="ask_swarm",
    title="Ask a Swarms agent",
    description=(
        "Ask a Swarms agent (OpenAI-compatible chat completions) for a second opinion from another model; "
        "max_loops lets it reason in several passes, n returns several answers."
    ),
    args_model=SwarmsArgs,
    key_env="SWARMS_API_KEY",
    auth="x-api-key",
    default_base_url="https://api.swarms.world/v1",
    default_model="gpt-4.1-mini",
    default_max_concurrency=8,
)
