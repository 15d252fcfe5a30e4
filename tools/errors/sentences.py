"""Every sentence a person reads when a call fails, each written once, here: one function per failure,
which returns the error (`tools.errors.tree`) carrying it."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from swarm_inference_mcp.tools.errors.reading import (
    parse_retry_after,
    upstream_reason,
    upstream_request_id,
    upstream_words,
)
from swarm_inference_mcp.tools.errors.tree import (
    ArgumentError,
    AuthError,
    BadRequestError,
    BadResponseError,
    BudgetError,
    CallCancelledError,
    CallError,
    ConfigError,
    DeadlineError,
    InstanceLostError,
    NetworkError,
    NotFoundError,
    PaymentError,
    RateLimitedError,
    ServerError,
    StatusError,
    UnknownJobError,
)

JOB_LIMIT_RETRY_S = 30.0
"""What a client at its job limit is told to wait: swarm jobs take tens of seconds to minutes."""


def instance_lost(labels: str, job_id: str, lease_s: float) -> InstanceLostError:
    """A job of another instance sharing Redis that stopped renewing its lease before the job finished."""
    return InstanceLostError(
        labels,
        f"job {job_id} was lost: the server instance running it stopped (it has not been heard from for "
        f"{lease_s:g} s) before an answer arrived. Ask again.",
    )


def shared_state_down(tool: str, job_id: str, problem: str) -> ConfigError:
    """A job of another instance that cannot be looked up while Redis is down."""
    return ConfigError(
        tool,
        f"{problem}; job {job_id[:64]!r} belongs to another instance and cannot be reached "
        "until Redis is back. Try again shortly.",
    )


# --- Sentences of the bad answers (tools.completion) --------------------------------------------

_BAD_ANSWERS = {
    "not_json": "the answer was not valid JSON (truncated or not an API response).",
    "not_completion": "the answer was JSON but not a chat completion object.",
    "no_choices": "the answer had no choices.",
    "models_not_json": "the model list was not valid JSON.",
    "models_no_list": "the model list had no list of models.",
    "event_not_json": "the stream sent an event that was not valid JSON.",
    "event_not_chunk": "the stream sent an event that was not a chunk object.",
    "stream_empty": "the stream ended without any answer.",
}


def bad_answer(provider: str, what: str) -> BadResponseError:
    """An answer that is no chat completion (or model list); `what` is a key of `_BAD_ANSWERS`."""
    return BadResponseError(provider, _BAD_ANSWERS[what])


def too_large(provider: str, limit: int) -> BadResponseError:
    """An answer past `SWARM_MCP_MAX_RESPONSE_BYTES`: cut off as it arrived, never used."""
    return BadResponseError(
        provider,
        f"the answer was longer than {limit:,} bytes (SWARM_MCP_MAX_RESPONSE_BYTES), so it was cut off and not used.",
    )


def choice_without_text(provider: str, position: int) -> BadResponseError:
    return BadResponseError(provider, f"choice {position} of the answer had no text content.")


def error_instead_of_choices(provider: str, etype: str | None, message: str | None) -> ServerError:
    """A 200 answer whose body is an error object (the upstream's words are redacted by `Upstream`)."""
    return ServerError(provider, f"the answer carried an error instead of choices ({etype or 'error'}: {message}).")


def stream_error(provider: str, chunks: int, etype: str | None, message: str | None, partial: str) -> ServerError:
    """An `error` event inside a stream, in the upstream's own words."""
    said = f"{etype}: {message}" if etype and message else message or etype or "no details"
    return ServerError(
        provider, f"the stream reported an error after {chunks} chunks ({said}).", partial_text=partial or None
    )


# --- Sentences of the upstream client (tools.upstream) ---------------------------------------------


def no_api_key(label: str, key_env: str) -> ConfigError:
    return ConfigError(label, f"no API key is set; set {key_env} in the server's environment.")


def not_configured(key_env: str) -> str:
    """list_models' word on a provider without a key (an entry of its listing, not an error)."""
    return f"not configured: set {key_env}"


def client_not_built(label: str, problem: object) -> ConfigError:
    """The shared HTTP client could not be set up (certificates, proxy variables)."""
    return ConfigError(
        label,
        f"the HTTP client could not be set up ({problem}); check SSL_CERT_FILE, SSL_CERT_DIR and the proxy "
        "variables in the server's environment.",
    )


def models_deadline(label: str, timeout_s: float) -> DeadlineError:
    return DeadlineError(label, f"the model list did not arrive within {timeout_s:g} s.")


def call_deadline(label: str, timeout_s: float, attempts: int, partial: str) -> DeadlineError:
    return DeadlineError(
        label,
        f"no answer within the {timeout_s:g} s deadline; raise timeout_s or SWARM_MCP_TIMEOUT for slow swarms.",
        attempts=attempts,
        partial_text=partial or None,
    )


def queued_out(label: str, timeout_s: float, cap: int, *, attempts: int | None = None) -> DeadlineError:
    """A request that spent its deadline waiting for a free place under the provider's cap: never sent."""
    return DeadlineError(
        label,
        f"the call waited its whole deadline of {timeout_s:.0f} s in the queue behind other calls to {label} "
        f"(at most {cap} at once) and was not sent, so nothing was paid; call again later or raise timeout_s.",
        attempts=attempts,
    )


def stream_broke(label: str, chunks: int, partial: str) -> NetworkError:
    return NetworkError(
        label,
        f"the stream broke off after {chunks} chunks, before the answer was finished.",
        partial_text=partial or None,
    )


def connection_failed(label: str, how: str, partial: str = "") -> CallError:
    """A connection-level failure; `how`: refused (never left: retryable), undecodable, broke (while the
    answer arrived) or closed (before it did). Only a refused one may be retried: the others may have run."""
    if how == "refused":
        return NetworkError(
            label, "could not connect to the API (refused or unreachable); check the base URL.", retryable=True
        )
    if how == "undecodable":
        return BadResponseError(label, "the answer could not be decoded.", partial_text=partial or None)
    if how == "broke":
        return NetworkError(
            label,
            "the connection broke while the answer was arriving; it was not retried, since the job had run.",
            partial_text=partial or None,
        )
    return NetworkError(
        label, "the connection was closed before an answer arrived (not retried: the request may have run)."
    )


# --- Sentences of the budgets (server.accounting.ledger) -------------------------------------------------------


def client_budget_spent(label: str, client: str, limit: int, used: int) -> BudgetError:
    return BudgetError(
        label,
        f"the daily token budget of client {client} ({limit} tokens, from the tokens file) "
        f"is spent ({used} used); it resets at midnight, local time.",
        personal=True,
    )


def budget_spent(label: str, what: str, limit: int, variable: str, *, used: int, reset: str) -> BudgetError:
    """`what`: which budget ("daily token budget for Swarms"); `reset`: when or how it frees up."""
    return BudgetError(label, f"the {what} of {limit} tokens ({variable}) is spent ({used} used); {reset}.")


def budget_uncountable(label: str, problem: str, what: str) -> ConfigError:
    """The shared usage cannot be read while a budget needs it; `what` names the budget kind."""
    return ConfigError(label, f"{problem}; calls are refused while {what} is set, since it cannot be counted.")


# --- Sentences of the jobs (server.jobs.runner, server.jobs.following) ---------------------------------------


def too_many_jobs(label: str, client: str, limit: int) -> RateLimitedError:
    """A client at its limit of running jobs (SWARM_MCP_MAX_JOBS_PER_CLIENT, or max_jobs= in the tokens file)."""
    return RateLimitedError(
        label,
        f"client {client} already has {limit} jobs running, its limit; nothing was queued or sent. Collect or cancel "
        f"some (get_result, cancel_job), or retry after {JOB_LIMIT_RETRY_S:g} s.",
        retry_after_s=JOB_LIMIT_RETRY_S,
        personal=True,
    )


def cancelled_job(labels: str, *, by_user: bool) -> CallCancelledError:
    """A job that ended before its answer: cancelled with cancel_job, or left by its callers, or the server stopped."""
    why = "with cancel_job" if by_user else "because the server stopped or its caller left"
    return CallCancelledError(
        labels, f"the job was cancelled {why} before an answer arrived; its upstream request was aborted."
    )


def job_bug(tool: str) -> CallError:
    """A job that raised what no job should (a bug, logged with its traceback)."""
    return CallError(tool, "failed unexpectedly; see the server's log.")


def task_cursor_unknown(cursor: str) -> UnknownJobError:
    """A `tasks/list` cursor we never handed out."""
    return UnknownJobError(
        "tasks/list", f"the cursor {cursor[:32]!r} is not one tasks/list handed out; list from the start."
    )


def task_already_ended(task_id: str, status: str) -> UnknownJobError:
    """`tasks/cancel` (2025-11-25) of a task in a terminal status, which that generation refuses."""
    return UnknownJobError(
        "tasks/cancel", f"task {task_id[:64]!r} has already ended ({status}); nothing was cancelled."
    )


def foreign_record(tool: str, job_id: str, version: object) -> ConfigError:
    """A job recorded in Redis by a server instance that stores jobs in another form (another version)."""
    return ConfigError(
        tool,
        f"job {job_id[:64]!r} was recorded by a server instance of another version (record version {version!r}), "
        "which this one cannot read. Ask again, or run one version of the server per Redis.",
    )


def follow_deadline(labels: str, timeout_s: float) -> DeadlineError:
    """A call that waited for an identical job on another instance until its own deadline."""
    return DeadlineError(
        labels,
        f"no answer within the call's deadline of {timeout_s:g} s (waiting for an identical call that "
        "another server instance runs).",
    )


def unknown_job(tool: str, job_id: str, why: str) -> UnknownJobError:
    """`why`: malformed, restarted (another server process's id), expired, evicted, or never."""
    reasons = {
        "malformed": "is not a job id (ids look like j_…); pass the job_id that a call handed back",
        "restarted": "was handed out by another server process, which this one cannot reach: instances share jobs "
        "only through Redis (SWARM_MCP_REDIS_URL). If several instances serve this address, call get_result again "
        "(the next request may reach the one running it); if the server restarted, the job is gone: ask again",
        "expired": "finished longer ago than SWARM_MCP_JOB_TTL and its outcome was forgotten. Ask again",
        "evicted": "was forgotten to make room: the server keeps at most SWARM_MCP_MAX_JOBS finished jobs. Ask again",
        "never": "was never started by this server. Pass the job_id that a call handed back",
        "shared": "is not known to any server instance sharing Redis: it finished longer ago than SWARM_MCP_JOB_TTL, "
        "or was never handed out. Ask again",
    }
    return UnknownJobError(tool, f"job {job_id[:64]!r} {reasons[why]}.", retryable=why == "restarted")


_STATUS_CLASSES: dict[int, type[StatusError]] = {
    400: BadRequestError,
    422: BadRequestError,
    401: AuthError,
    403: AuthError,
    402: PaymentError,
    404: NotFoundError,
    429: RateLimitedError,
}
_RETRYABLE_SERVER_STATUSES = frozenset({502, 503, 504})


_MAX_ARGUMENT_PROBLEMS = 4


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _is_union_tag(part: str | int) -> bool:
    """pydantic names the union member it tried inside `loc` (`str`, `list[...]`, `TextPart`)."""
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or part[:1].isupper())


def _argument_problem(error: ErrorDetails) -> str:
    loc = list(error["loc"])
    tag = next((i for i, part in enumerate(loc) if _is_union_tag(part)), None)
    if tag is not None:
        where = ".".join(str(part) for part in loc[:tag])
        return f"`{where}` matches none of its allowed forms (see the tool's input schema)"
    where = ".".join(str(part) for part in loc)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"`{where}` is not an argument of this tool"
    if error["type"] == "missing":
        return f"`{where}` is required"
    if not where:
        return message
    value = error.get("input")
    shown = (
        repr(value) if isinstance(value, int | float | bool) or (isinstance(value, str) and len(value) <= 40) else ""
    )
    return f"`{where}`: {message[0].lower()}{message[1:]}" + (f" (got {shown})" if shown else "")


def argument_error(tool: str, exc: ValidationError) -> ArgumentError:
    """Arguments the tool's schema refuses, as one sentence naming each argument and what is wrong."""
    problems = list(dict.fromkeys(_argument_problem(e) for e in exc.errors(include_url=False)))
    more = len(problems) - _MAX_ARGUMENT_PROBLEMS
    listed = "; ".join(problems[:_MAX_ARGUMENT_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
    return ArgumentError(tool, f"invalid arguments: {listed}. Nothing was sent.")


def shutting_down(tool: str, *, started: bool) -> CallCancelledError:
    """A call the server's shutdown refused (`started=False`) or cut short after its grace period."""
    if started:
        detail = (
            "the server shut down before the answer arrived; the call was cancelled after the shutdown grace "
            "period and its upstream request aborted. Call again once the server is back."
        )
    else:
        detail = "the server is shutting down and takes no new calls. Call again once it is back."
    return CallCancelledError(tool, detail, retryable=True)


def status_error(
    provider: str,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    key_env: str,
    secrets: tuple[str, ...] = (),
) -> StatusError:
    """Map an HTTP error answer to its error class and write the sentence a person reads; `secrets` (the
    configured keys) are removed from the upstream's words before they are clipped."""
    utype, umessage = upstream_reason(body)
    umessage = upstream_words(umessage, secrets) if umessage else None
    utype = upstream_words(utype, secrets) if utype else None
    said = f" ({utype}: {umessage})" if utype and umessage else f" ({umessage or utype})" if umessage or utype else ""
    retry_after = parse_retry_after(headers, umessage) if status in (429, 503) else None

    cls: type[StatusError] = _STATUS_CLASSES.get(status, ServerError)
    retryable: bool | None = None
    if cls is AuthError:
        advice = f"check that {key_env} holds a valid key with access to this model"
    elif cls is PaymentError:
        advice = "the account needs credit or a paid plan"
    elif cls is NotFoundError:
        advice = "check the model name (list_models shows what the provider serves)"
    elif cls is BadRequestError:
        advice = "correct the arguments and call again"
    elif cls is RateLimitedError:
        advice = f"retry after {retry_after:g} s" if retry_after is not None else "wait a little and retry"
    else:
        retryable = status in _RETRYABLE_SERVER_STATUSES
        later = f"after {retry_after:g} s" if retry_after is not None else "later"
        advice = f"the provider failed; try again {later}"
    detail = f"HTTP {status}{said}; {advice}."
    return cls(
        provider,
        detail,
        status=status,
        upstream_type=utype,
        retryable=retryable,
        retry_after_s=retry_after,
        request_id=upstream_request_id(headers, body),
    )


# --- Sentences of the resources (server.app) ---------------------------------------------------------


NOT_RUNNING = "the server is not running"
"""A resource read while the server is starting or stopping."""


def answer_not_there(job_id: str) -> str:
    """A job's answer resource read while the job still runs."""
    return f"Job {job_id[:64]} is still running: its answer is not there yet; get_result waits for it."
