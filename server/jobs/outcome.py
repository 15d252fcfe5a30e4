"""What a job produces, in our own words: one provider's answer, `ask_both`'s sides, or a failure.

The job table keeps these, the board exchanges them between instances as JSON of ours
(`outcome_to_json` / `outcome_from_json`, inside the board's versioned record), and `server.results`
is the one place that turns one into what a client sees. Nothing here knows MCP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from swarm_inference_mcp.tools.errors.tree import CallError, all_failed
from swarm_inference_mcp.tools.models import Answer, ErrorInfo, Usage


class Trace(BaseModel):
    """How one provider's answer came about: never acted on, so it travels beside the answer (as
    `model_dump(exclude_none=True)`)."""

    model_config = ConfigDict(frozen=True)

    latency_ms: int
    attempts: int | None = None
    model: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Failure:
    """Why there is no answer: the sentence a person reads, and the form a program reads (`ErrorInfo`'s
    fields, or `all_failed`'s summary with each provider's failure in it)."""

    sentence: str
    info: dict[str, Any]
    personal: bool = False
    """It is the asking client's own (its budget, its limit): another client's identical call does not
    take it as its outcome."""

    @property
    def kind(self) -> str:
        return str(self.info["kind"])

    @classmethod
    def of(cls, err: CallError) -> Failure:
        return cls(err.sentence, err.to_dict(), err.personal)


@dataclass(frozen=True)
class Answered:
    """One provider's answer."""

    provider: str
    answer: Answer
    trace: Trace


@dataclass(frozen=True)
class SideFailed:
    """One provider's failure beside another's answer (`ask_both`)."""

    provider: str
    failure: Failure

    @property
    def info(self) -> ErrorInfo:
        return ErrorInfo.model_validate(self.failure.info)


@dataclass(frozen=True)
class Sides:
    """`ask_both`'s outcome when at least one provider answered: one side per provider, in order."""

    sides: tuple[Answered | SideFailed, ...]


@dataclass(frozen=True)
class Failed:
    """The call failed as a whole: refused, cancelled, timed out, or every provider failed."""

    failure: Failure
    sides: tuple[SideFailed, ...] = ()
    """`ask_both` when every provider failed: each one's failure (`failure` sums them up)."""

    @property
    def kind(self) -> str:
        return self.failure.kind

    @classmethod
    def of(cls, err: CallError) -> Failed:
        return cls(Failure.of(err))

    @classmethod
    def every_side(cls, sides: tuple[SideFailed, ...]) -> Failed:
        infos = [side.failure.info for side in sides]
        summary = all_failed([side.failure.sentence for side in sides], infos)
        personal = any(side.failure.personal for side in sides)
        return cls(Failure(summary["message"], summary, personal), sides)


Outcome = Answered | Sides | Failed


@dataclass(frozen=True)
class Collected:
    """An answer read from its job (get_result, or a long answer kept so that it can be read on): one
    too long for a result is shown a page at a time, from `offset` (`server.results`)."""

    job_id: str
    outcome: Answered | Sides
    offset: int = 0


def status_of(outcome: Outcome | None, *, lost: bool = False) -> str:
    """A job's status in one word: running (or lost, when its instance stopped), done, failed, cancelled."""
    if outcome is None:
        return "lost" if lost else "running"
    if not isinstance(outcome, Failed):
        return "done"
    return "cancelled" if outcome.kind == "cancelled" else "failed"


def usage_by_provider(outcome: Outcome) -> dict[str, Usage | None]:
    """The tokens each provider's answer reported (a failed provider is not listed)."""
    if isinstance(outcome, Answered):
        return {outcome.provider: outcome.answer.usage}
    if isinstance(outcome, Sides):
        return {side.provider: side.answer.usage for side in outcome.sides if isinstance(side, Answered)}
    return {}


def outcome_to_json(outcome: Outcome) -> dict[str, Any]:
    """The outcome as JSON-ready data (the board's record versions it)."""
    return _encode(outcome)


def listed_json(outcome: Outcome) -> dict[str, Any]:
    """The outcome as a listing reads it: `outcome_to_json` without any answer text or partial text, so
    that a list of jobs costs the same whatever their answers hold (status, usage, sentences remain)."""
    light: dict[str, Any] = _without_text(outcome_to_json(outcome))
    return light


def _without_text(data: Any) -> Any:
    if isinstance(data, list):
        return [_without_text(item) for item in data]
    if not isinstance(data, dict):
        return data
    light = {key: _without_text(value) for key, value in data.items() if key != "partial_text"}
    if "text" in light and isinstance(light["text"], str):
        light["text"] = ""
    return light


def outcome_from_json(data: dict[str, Any]) -> Outcome:
    """`outcome_to_json`'s inverse."""
    outcome: Outcome = _decode(data)
    return outcome


def _encode(outcome: Outcome | SideFailed) -> dict[str, Any]:
    if isinstance(outcome, Answered):
        return {
            "answered": outcome.provider,
            "answer": outcome.answer.model_dump(mode="json", exclude_none=True),
            "trace": outcome.trace.model_dump(exclude_none=True),
        }
    if isinstance(outcome, SideFailed):
        side = {"side_failed": outcome.provider, "sentence": outcome.failure.sentence, "info": outcome.failure.info}
        return {**side, "personal": True} if outcome.failure.personal else side
    if isinstance(outcome, Sides):
        return {"sides": [_encode(side) for side in outcome.sides]}
    failed: dict[str, Any] = {"sentence": outcome.failure.sentence, "info": outcome.failure.info}
    if outcome.failure.personal:
        failed["personal"] = True
    return {"failed": failed, "sides": [_encode(side) for side in outcome.sides]}


def _decode(data: dict[str, Any]) -> Any:
    if "answered" in data:
        return Answered(data["answered"], Answer.model_validate(data["answer"]), Trace(**data["trace"]))
    if "side_failed" in data:
        return SideFailed(data["side_failed"], Failure(data["sentence"], data["info"], data.get("personal", False)))
    if "failed" in data:
        sides = tuple(_decode(side) for side in data["sides"])
        failed = data["failed"]
        return Failed(Failure(failed["sentence"], failed["info"], failed.get("personal", False)), sides)
    return Sides(tuple(_decode(side) for side in data["sides"]))
