"""What every provider tool shares: the prompt-or-messages arguments, the provider description, and
the result shape.

A provider module subclasses `ChatArgs` with the fields its chat-completions schema defines;
`ChatArgs.request_body` turns any of them into a request body, so the mapping lives here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TEXT = 500_000
"""Most characters one request may hold, all its text together (prompt and system, or every message
and content part): far above any model's context, low enough that a runaway argument is refused
here instead of being paid for upstream."""
MAX_MESSAGES = 500
MAX_TOKENS = 1_000_000
"""Upper bound for the token-limit arguments: refuses absurd values, allows any real model's."""

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One chat message, as both vendors' schemas define it."""

    model_config = ConfigDict(extra="forbid")

    role: Role = Field(description="Who wrote the message: system, user or assistant.")
    content: str = Field(min_length=1, max_length=MAX_TEXT, description="The message text.")


class Conversation(BaseModel):
    """What to ask: `prompt` (with an optional `system`) or `messages`, and the call's deadline.

    Unknown arguments are refused, not dropped.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT,
        description="The question, as text (or give messages).",
    )
    system: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT,
        description="A system instruction sent before prompt.",
    )
    messages: list[Message] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_MESSAGES,
        description="A conversation instead of prompt: [{role: system|user|assistant, content}].",
    )
    timeout_s: float | None = Field(
        default=None,
        ge=1,
        le=86_400,
        description="Deadline in seconds, retries included; the default suits slow swarms.",
    )
    wait_s: float | None = Field(
        default=None,
        ge=0,
        le=86_400,
        description="Seconds to wait before a job handle comes back instead (0: at once).",
    )

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> Conversation:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` (a string) or `messages` (a list of {role, content})")
        if self.system is not None and self.messages is not None:
            raise ValueError("`system` goes with `prompt`; with `messages`, put a system message in the list")
        if self.messages is not None and (total := _characters(self.chat_messages())) > MAX_TEXT:
            raise ValueError(
                f"the messages hold {total} characters in all, more than the {MAX_TEXT} a request may hold "
                "(every message and content part together)"
            )
        if self.prompt is not None and len(self.prompt) + len(self.system or "") > MAX_TEXT:
            raise ValueError(f"`prompt` and `system` hold more than the {MAX_TEXT} characters a request may hold")
        return self

    def chat_messages(self) -> list[dict[str, Any]]:
        """The conversation as the upstream expects it; `null` fields are left out."""
        if self.messages is not None:
            return [m.model_dump(exclude_none=True) for m in self.messages]
        messages: list[dict[str, Any]] = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": self.prompt})
        return messages


def _characters(value: Any) -> int:
    """Every character of every string in `value` (a message list as sent: contents, parts, names)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_characters(item) for item in value.values())
    if isinstance(value, list):
        return sum(_characters(item) for item in value)
    return 0


class ChatArgs(Conversation):
    """A provider tool's arguments: the conversation, a model, and the provider's own fields."""

    LOCAL_FIELDS: ClassVar[frozenset[str]] = frozenset({"prompt", "system", "messages", "model", "timeout_s", "wait_s"})
    """Fields that shape the call but are not sent upstream under their own name."""

    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Model id; default: the server's.",
    )

    def request_body(self, default_model: str) -> dict[str, Any]:
        """The chat-completions body: only what the caller set, plus model and messages."""
        body: dict[str, Any] = {"model": self.model or default_model, "messages": self.chat_messages()}
        body.update(self.model_dump(exclude_none=True, exclude=set(self.LOCAL_FIELDS)))
        return body


@dataclass(frozen=True)
class ProviderSpec:
    """What the server needs to know to offer one provider as a tool.

    `name` is the settings key and the `provider` field of results; `label` is what people read.
    """

    name: str
    label: str
    tool_name: str
    title: str
    description: str
    args_model: type[ChatArgs]
    key_env: str
    auth: Literal["bearer", "x-api-key"]
    default_base_url: str
    default_model: str
    default_max_concurrency: int
    """Most simultaneous requests by default: what the provider's rate limits allow a single key."""


def _fields_by_name(schema: dict[str, Any]) -> None:
    """Declare the fields by name (`required`: those always there, a nullable one is left out when
    null), with their type in the description, and no schema per field: clients check every result
    against the tool's output schema, one validator descent per declared field they meet
    (`docs/performance.md`). They are integers whatever the upstream sends, as pydantic parses them."""
    properties = schema.pop("properties", {})
    nullable = {name for name, prop in properties.items() if {"type": "null"} in prop.get("anyOf", [])}
    schema["required"] = [name for name in schema.get("required", []) if name not in nullable]


class Usage(BaseModel):
    """Token counts as the upstream reported them."""

    model_config = ConfigDict(json_schema_extra=_fields_by_name)

    prompt_tokens: int = Field(description="Tokens in the request.")
    completion_tokens: int = Field(description="Tokens in the answer.")
    total_tokens: int = Field(description="Both together.")


class ProviderUsage(BaseModel):
    """Running totals of one provider."""

    calls: int = Field(0, description="Requests sent upstream, failed ones included.")
    errors: int = Field(0, description="Of those, the ones that failed.")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    token_budget: int | None = Field(None, description="This provider's own budget (<PROVIDER>_TOKEN_BUDGET).")
    budget_remaining: int | None = Field(None, description="Tokens left of this provider's own budget.")


class SessionUsage(BaseModel):
    """Totals since the server started, and what is left of the token budget."""

    providers: dict[str, ProviderUsage] = Field(description="Running totals per provider.")
    total_tokens: int = Field(description="All providers together.")
    token_budget: int | None = Field(description="SWARM_MCP_TOKEN_BUDGET, or null when there is none.")
    budget_remaining: int | None = Field(description="Tokens left before calls are refused, or null.")


class Result(BaseModel):
    """A result model: in its output schema, a field that always appears (it has a default but is
    not nullable) is required."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class ChoiceOut(Result):
    """One of several answers, when `n` > 1."""

    model_config = ConfigDict(json_schema_extra=_fields_by_name)

    index: int = Field(description="Position of the choice, from 0.")
    text: str = Field(description="The choice's answer text.")
    finish_reason: str | None = Field(
        default=None, description="Why it ended early (length, content_filter); left out when it ended normally."
    )


class ErrorInfo(Result):
    """A failure in the form a program reads; fields that do not apply are left out."""

    model_config = ConfigDict(json_schema_extra=_fields_by_name)

    kind: str = Field(description="What went wrong: auth, rate_limited, timeout, config, invalid_arguments, ...")
    message: str = Field(description="The same one sentence a person reads.")
    provider: str = Field(description="Who failed: Fortytwo, Swarms, or the tool refusing its arguments.")
    status: int | None = Field(default=None, description="The upstream's HTTP status, when it answered one.")
    retryable: bool = Field(description="Whether the same call may succeed if made again later.")
    retry_after_s: float | None = Field(default=None, description="Seconds the upstream asked us to wait.")
    attempts: int | None = Field(default=None, description="Upstream requests made before giving up.")
    partial_text: str | None = Field(default=None, description="What a broken stream delivered before it failed.")
    request_id: str | None = Field(
        default=None, description="The provider's id of the failed request, for its support."
    )


class Answer(Result):
    """Structured content of a successful call; fields that do not apply are left out, never null.

    Only what a caller acts on: every client checks this against the output schema on every call,
    field by field. So how the answer came about (the model that answered, completion id, latency,
    attempts) is in `_meta` instead (see `server.results.TRACE_META`), keyed by the provider, whose
    name the tool already says (and `ask_both` says with each answer)."""

    status: Literal["done"] = Field("done", description="done: this is the answer (a job handle says running).")
    text: str = Field(description="The answer (the first choice's text).")
    finish_reason: str | None = Field(
        default=None,
        description="Why the answer ended early: length (it reached max_tokens) or content_filter; left out when it "
        "ended normally (stop), as most do.",
    )
    usage: Usage | None = Field(
        default=None,
        description="Token counts, three integers: prompt_tokens, completion_tokens, total_tokens.",
    )
    choices: list[ChoiceOut] | None = Field(
        default=None, description="Every choice, when more than one came back: {index, text, finish_reason?}."
    )
    cached: bool | None = Field(
        default=None,
        description="true when a recent identical call's answer was reused (no tokens spent); left out otherwise.",
    )


class AnswerPage(Result):
    """Structured content of one page of a long answer; get_result with `offset` reads the next."""

    status: Literal["done"] = Field("done", description="done: the answer is complete; this is one page of it.")
    job_id: str = Field(description="Pass it to get_result with offset to read on.")
    text: str = Field(description="This page of the answer's text.")
    offset: int = Field(description="Where this page starts in the answer's text (characters).")
    total_chars: int = Field(description="The whole answer's length in characters.")
    next_offset: int | None = Field(default=None, description="Where the next page starts; left out on the last.")
    usage: Usage | None = Field(
        default=None, description="Token counts, three integers: prompt_tokens, completion_tokens, total_tokens."
    )


class ProviderOutcome(Result):
    """One provider's side of `ask_both`: its answer, or why there is none."""

    provider: str = Field(description="fortytwo or swarms.")
    answer: Answer | None = Field(default=None, description="The answer, when the provider gave one.")
    error: ErrorInfo | None = Field(
        default=None,
        description="Why there is no answer, as in an error's _meta: kind, message, provider, retryable, ...",
    )


class BothAnswers(Result):
    """Structured content of `ask_both`."""

    status: Literal["done"] = Field("done", description="done: these are the answers (a job handle says running).")
    results: list[ProviderOutcome] = Field(description="One entry per provider, Fortytwo first.")
