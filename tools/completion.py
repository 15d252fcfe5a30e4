"""Turning what an upstream sent into a `Completion`: a whole JSON answer, or streamed chunks.

Pure functions and one accumulator, no I/O. Everything malformed becomes a `BadResponseError`
with a sentence that names what was wrong, never the body itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from swarm_inference_mcp.tools.errors.reading import upstream_reason
from swarm_inference_mcp.tools.errors.sentences import (
    bad_answer,
    choice_without_text,
    error_instead_of_choices,
    stream_error,
)
from swarm_inference_mcp.tools.models import ChoiceOut, Usage


@dataclass
class Completion:
    """One answer from an upstream, whatever the transport."""

    id: str | None
    model: str | None
    choices: list[ChoiceOut]
    usage: Usage | None
    attempts: int = 1
    cached: bool = False
    first_chunk_s: float | None = None
    """For a streamed answer, how long its first chunk took to arrive after the request was sent."""


def _content_text(content: Any) -> str | None:
    """Message content as text: a string, or the text parts of an OpenAI-style parts list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(texts) if texts else None
    return None


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    try:
        return Usage.model_validate(raw)
    except ValueError:
        return None


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_completion(provider: str, body: bytes) -> Completion:
    """Parse a non-streamed chat completion, refusing anything that carries no answer."""
    try:
        data = json.loads(body)
    except ValueError:
        raise bad_answer(provider, "not_json") from None
    if not isinstance(data, dict):
        raise bad_answer(provider, "not_completion")
    if "error" in data and "choices" not in data:
        etype, message = upstream_reason(body)
        raise error_instead_of_choices(provider, etype, message)
    raw_choices = data.get("choices")
    if not isinstance(raw_choices, list) or not raw_choices:
        raise bad_answer(provider, "no_choices")
    choices: list[ChoiceOut] = []
    for position, raw in enumerate(raw_choices):
        message = raw.get("message") if isinstance(raw, dict) else None
        text = _content_text(message.get("content")) if isinstance(message, dict) else None
        if text is None:
            raise choice_without_text(provider, position)
        index = raw.get("index", position)
        choices.append(
            ChoiceOut(
                index=index if isinstance(index, int) else position,
                text=text,
                finish_reason=_opt_str(raw.get("finish_reason")),
            )
        )
    return Completion(
        id=_opt_str(data.get("id")),
        model=_opt_str(data.get("model")),
        choices=sorted(choices, key=attrgetter("index")),
        usage=_usage(data.get("usage")),
    )


def model_ids(provider: str, body: bytes) -> list[str]:
    """Model ids from a `/models` answer: OpenAI's `{"data": [{"id"}]}`, or a bare list."""
    try:
        data = json.loads(body)
    except ValueError:
        raise bad_answer(provider, "models_not_json") from None
    items = data.get("data", data.get("models")) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise bad_answer(provider, "models_no_list")
    ids = [item.get("id") if isinstance(item, dict) else item for item in items]
    return sorted({i for i in ids if isinstance(i, str)})


@dataclass
class StreamAccumulator:
    """Builds a `Completion` from OpenAI-style `chat.completion.chunk` events as they arrive."""

    provider: str
    id: str | None = None
    model: str | None = None
    usage: Usage | None = None
    done: bool = False
    chunks: int = 0
    texts: dict[int, list[str]] = field(default_factory=dict)
    finish: dict[int, str | None] = field(default_factory=dict)

    def feed(self, data: str) -> str:
        """Take one event's data; return the new text it added to the first choice ("" if none).

        Raises `ServerError` for an error object inside the stream, `BadResponseError` for data
        that is not a chunk.
        """
        if data.strip() == "[DONE]":
            self.done = True
            return ""
        try:
            chunk = json.loads(data)
        except ValueError:
            raise bad_answer(self.provider, "event_not_json") from None
        if not isinstance(chunk, dict):
            raise bad_answer(self.provider, "event_not_chunk")
        if "error" in chunk:
            self.raise_error(data)
        self.chunks += 1
        self.id = self.id or _opt_str(chunk.get("id"))
        self.model = self.model or _opt_str(chunk.get("model"))
        self.usage = _usage(chunk.get("usage")) or self.usage
        added = ""
        for position, raw in enumerate(chunk.get("choices") or []):
            if not isinstance(raw, dict):
                continue
            index = raw.get("index", position)
            index = index if isinstance(index, int) else position
            delta = raw.get("delta") or raw.get("message") or {}
            piece = _content_text(delta.get("content")) if isinstance(delta, dict) else None
            parts = self.texts.setdefault(index, [])
            if piece:
                parts.append(piece)
                if index == 0:
                    added += piece
            if raw.get("finish_reason") is not None:
                self.finish[index] = _opt_str(raw.get("finish_reason"))
        return added

    def raise_error(self, data: str) -> None:
        """An `error` event (or an error object in a data event): report it with its own words."""
        etype, message = upstream_reason(data.encode())
        raise stream_error(self.provider, self.chunks, etype, message, self.partial_text)

    @property
    def partial_text(self) -> str:
        return "".join(self.texts.get(0, []))

    @property
    def complete(self) -> bool:
        """Whether the stream ended properly: `[DONE]`, or every choice saw a finish reason."""
        return self.done or (bool(self.texts) and all(i in self.finish for i in self.texts))

    def result(self) -> Completion:
        if not self.texts:
            raise bad_answer(self.provider, "stream_empty")
        choices = [
            ChoiceOut(index=i, text="".join(self.texts[i]), finish_reason=self.finish.get(i))
            for i in sorted(self.texts)
        ]
        return Completion(id=self.id, model=self.model, choices=choices, usage=self.usage)
