"""What a client holds and reads of a job: the `get_result`/`cancel_job` arguments, the handle a slow call
hands back (its structured form and its sentence), what `cancel_job` says, and `swarm://jobs` entries.

How jobs run is `server.jobs.runner`; this module only words them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from swarm_inference_mcp.server.jobs.outcome import usage_by_provider
from swarm_inference_mcp.server.jobs.table import Job
from swarm_inference_mcp.tools.models import Result


class JobArgs(BaseModel):
    """Arguments of `cancel_job`."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=200, description="The job_id a call returned.")


class GetResultArgs(JobArgs):
    """Arguments of `get_result`."""

    wait_s: float | None = Field(
        default=None,
        ge=0,
        le=86_400,
        description="Seconds to wait for the outcome; default: the server's.",
    )
    offset: int | None = Field(
        default=None, ge=0, description="Where to read on in a long answer: a page's next_offset."
    )


class RunningJob(Result):
    """Structured content of a call whose answer is not there yet: a handle to collect it with."""

    status: Literal["running"] = Field("running", description="running: the answer is not there yet.")
    job_id: str = Field(description="Pass it to get_result to collect the outcome, or to cancel_job.")
    tool: str = Field(description="The tool whose call this job runs.")
    providers: list[str] = Field(description="The providers being asked: fortytwo, swarms.")
    elapsed_s: float = Field(description="Seconds since the job started.")
    poll_after_s: float = Field(description="Suggested pause before get_result (which itself waits).")
    deadline_in_s: float = Field(description="Seconds until the job's deadline; it fails with a timeout then.")
    forget_after_s: float = Field(description="Seconds after it finishes that the outcome is kept for get_result.")


POLL_AFTER_S = 5.0
"""The pause a handle suggests before get_result: a program polling in a loop waits this long between
calls; a model may call at once (get_result itself waits up to wait_s)."""


class CancelOutcome(Result):
    """Structured content of `cancel_job`."""

    job_id: str = Field(description="The job.")
    status: Literal["cancelled", "finished"] = Field(
        description="cancelled: it was running and is stopped now; finished: it had already ended, nothing changed."
    )


def running_job(job: Job, forget_after_s: float) -> tuple[str, RunningJob]:
    """The handle of a job still running (here or on another instance): its sentence and structured form."""
    elapsed = time.time() - job.started
    running = RunningJob(
        job_id=job.id,
        tool=job.tool,
        providers=list(job.providers),
        elapsed_s=round(elapsed, 1),
        poll_after_s=POLL_AFTER_S,
        deadline_in_s=round(max(0.0, job.timeout_s - elapsed), 1),
        forget_after_s=forget_after_s,
    )
    text = (
        f"{working_words(job, '; swarm answers often take several minutes')}. Call get_result with job_id "
        f'"{job.id}" to collect the answer (it waits for it). Do not ask again: the job is running and paid for once.'
    )
    return text, running


def working_words(job: Job, aside: str = "") -> str:
    """What a running job is doing: "Fortytwo is still working on this (90 s so far)"."""
    verb = "are" if len(job.providers) > 1 else "is"
    return f"{job.labels} {verb} still working on this ({time.time() - job.started:.0f} s so far{aside})"


CancelWas = Literal["cancelled", "finished", "lost", "unconfirmed"]


@dataclass(frozen=True)
class CancelReport:
    """What `cancel_job` found: it cancelled the job, the job had finished (with `status`), the instance
    running it was gone, or that instance has not confirmed the cancel yet."""

    job_id: str
    labels: str
    was: CancelWas
    status: str | None = None


def cancel_words(report: CancelReport) -> tuple[str, CancelOutcome]:
    """`cancel_job`'s sentence and structured form."""
    job_id = report.job_id
    if report.was == "cancelled":
        text = f"Job {job_id} is cancelled: its upstream request to {report.labels} was aborted."
    elif report.was == "unconfirmed":
        text = f"Job {job_id} is being cancelled by the server instance running it (it has not confirmed yet)."
    elif report.was == "lost":
        text = f"Job {job_id} had already ended: the server instance running it stopped. Nothing runs anymore."
    else:
        status = f" ({report.status})" if report.status else ""
        text = f"Job {job_id} had already finished{status}; nothing was cancelled. get_result returns it."
    status_out: Literal["cancelled", "finished"] = (
        "cancelled" if report.was in ("cancelled", "unconfirmed") else "finished"
    )
    return text, CancelOutcome(job_id=job_id, status=status_out)


def listed(job: Job, status: str, forget_in_s: float | None, now: float) -> dict[str, Any]:
    """One job as swarm://jobs shows it (no prompt text); `now` is wall-clock time, `forget_in_s` how long
    a finished job is still kept (`JobRunner` knows by which clock)."""
    entry: dict[str, Any] = {
        "id": job.id,
        "tool": job.tool,
        "providers": list(job.providers),
        "client": job.client,
        "status": status,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job.started)),
        "elapsed_s": round((job.finished or now) - job.started, 1),
    }
    if job.finished is not None:
        if forget_in_s is not None:
            entry["forget_in_s"] = round(forget_in_s, 1)
        usage = usage_by_provider(job.outcome) if job.outcome is not None else {}
        entry["usage"] = {name: None if u is None else u.model_dump() for name, u in usage.items()}
    return entry
