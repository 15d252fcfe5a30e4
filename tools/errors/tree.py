"""The error classes of the tree drawn in `tools.errors`: what a failure is, never its words."""

from __future__ import annotations

from typing import Any, ClassVar

from swarm_inference_mcp.tools.errors.reading import redact


class CallError(Exception):
    """A tool call that ends without an answer: an upstream's failure, or a refusal of ours.

    `provider` is the display name ("Fortytwo"); `attempts` is filled in by the retry loop.
    `partial_text` holds what a stream delivered before it failed, if anything.
    """

    kind: ClassVar[str] = "upstream"
    retryable_default: ClassVar[bool] = False

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
        attempts: int | None = None,
        partial_text: str | None = None,
        personal: bool = False,
        request_id: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.provider = provider
        self.detail = detail
        self.status = status
        self.retryable = self.retryable_default if retryable is None else retryable
        self.retry_after_s = retry_after_s
        self.attempts = attempts
        self.partial_text = partial_text
        self.personal = personal
        """It belongs to the client that asked (its own budget, its own limit): never handed to another
        client that shares the same request."""
        self.request_id = request_id
        """The upstream's id of the failed request (its `x-request-id` header, or its body's `id`), for
        the provider's support."""

    def redact(self, secrets: tuple[str, ...]) -> CallError:
        """Blank out every secret in the text that came from upstream (it may echo a key back)."""
        self.detail = redact(self.detail, secrets)
        if self.partial_text:
            self.partial_text = redact(self.partial_text, secrets)
        if self.request_id and redact(self.request_id, secrets) != self.request_id:
            self.request_id = None
        return self

    @property
    def sentence(self) -> str:
        """One sentence a person can act on, plus the partial answer when a stream broke."""
        text = f"{self.provider}: {self.detail}"
        if self.partial_text:
            text += f"\n\n[partial answer, incomplete]\n{self.partial_text}"
        return text

    def __str__(self) -> str:
        return self.sentence

    def to_dict(self) -> dict[str, Any]:
        """The structured form a program reads (`tools.models.ErrorInfo`); what does not apply is left out."""
        fields = {
            "kind": self.kind,
            "message": f"{self.provider}: {self.detail}",
            "provider": self.provider,
            "status": self.status,
            "retryable": self.retryable,
            "retry_after_s": self.retry_after_s,
            "attempts": self.attempts,
            "partial_text": self.partial_text,
            "request_id": self.request_id,
        }
        return {key: value for key, value in fields.items() if value is not None}


def all_failed(sentences: list[str], infos: list[dict[str, Any]]) -> dict[str, Any]:
    """`ask_both` when every provider failed: one summary a program reads, with each failure (its
    sentence, and its `to_dict` form) in it."""
    return {
        "kind": "all_failed",
        "message": "Every provider failed: " + " ".join(sentences),
        "retryable": any(info.get("retryable") for info in infos),
        "errors": infos,
    }


class ArgumentError(CallError):
    kind = "invalid_arguments"


class ConfigError(CallError):
    kind = "config"


class BudgetError(CallError):
    kind = "budget"


class StatusError(CallError):
    """The upstream answered with an error status; `upstream_type` is its own error type, if any."""

    def __init__(self, provider: str, detail: str, *, upstream_type: str | None = None, **kw: Any) -> None:
        super().__init__(provider, detail, **kw)
        self.upstream_type = upstream_type


class BadRequestError(StatusError):
    kind = "bad_request"


class AuthError(StatusError):
    kind = "auth"


class PaymentError(StatusError):
    kind = "payment"


class NotFoundError(StatusError):
    kind = "not_found"


class RateLimitedError(StatusError):
    kind = "rate_limited"
    retryable_default = True


class ServerError(StatusError):
    kind = "upstream"


class DeadlineError(CallError):
    kind = "timeout"


class NetworkError(CallError):
    kind = "network"


class BadResponseError(CallError):
    kind = "bad_response"


class CallCancelledError(CallError):
    kind = "cancelled"


class UnknownJobError(CallError):
    kind = "unknown_job"


class InstanceLostError(CallError):
    kind = "instance_lost"
    retryable_default = True
