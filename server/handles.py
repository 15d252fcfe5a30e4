"""Job handles: a slow answer outlives the host's patience without being paid for twice.

Every ask_* call runs as a job in a task of the server's own, and the call waits for it at most
`wait_s`. An answer in time comes back as usual; otherwise the call returns a `running` result
with a `job_id`, and `get_result` collects the outcome later (`cancel_job` stops it).

Who owns a job: until a handle is handed out, its callers do; when the last of them leaves (the
client cancelled), the job is cancelled and its upstream requests aborted. Once a handle is out,
the server does: the job ends only when it finishes, reaches its deadline, is cancelled with
`cancel_job`, or the server stops.

What is remembered: running jobs, and the outcomes of handed-out jobs for `job_ttl_s` after they
finished (at most `max_kept`, the oldest forgotten first). An identical call (same tool and
request bodies) joins a running job, and gets the kept outcome of a finished one that answered.

Other instances (`server.board`): every job is announced on the board and claims its work there
first. When another instance already runs identical work, the job waits for that job's outcome
instead of sending the request again, and does the work itself only if that job ends without one
(cancelled, or its instance lost). An id this instance does not know is looked up on the board.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict, Field

from server.board import JobBoard, LocalBoard, SharedJob
from server.results import ERROR_META, error_result, structured
from tools.done import Done
from tools.errors import (
    CallCancelledError,
    UpstreamError,
    follow_deadline,
    instance_lost,
    shared_state_down,
    unknown_job,
)
from tools.models import Result
from tools.progress import Listeners, ProgressFn, wait_with_progress
from tools.usage import StateError

log = logging.getLogger(__name__)

FOLLOWERS_KEEP_S = 120.0
"""How long the board keeps the outcome of a job nobody holds a handle to, for instances waiting on it."""
FORGOTTEN_IDS = 10_000
"""How many forgotten job ids are remembered, to say why an id is unknown (expired or evicted)."""
_ID = re.compile(r"^j_([0-9a-f]{6})-[0-9a-f]{12}$")
CANCEL_CONFIRM_S = 5.0
"""How long cancel_job waits for another instance to confirm a cancel."""
_TRY_AGAIN = frozenset({"cancelled", "instance_lost"})
"""Outcomes of another instance's job that leave a job waiting on it still wanting an answer."""


def new_instance_id() -> str:
    """The id of one server process, the first part of every job id it hands out."""
    return secrets.token_hex(3)


@dataclass(frozen=True)
class Work:
    """One tool call's upstream work, described before it runs."""

    tool: str
    providers: tuple[str, ...]
    labels: str
    """How people name the providers: "Fortytwo", "Fortytwo and Swarms"."""
    request: str
    """The exact request bodies, as text: identical work asks identically."""
    timeout_s: float
    client: str | None
    """The HTTP client that asked (None over stdio)."""
    run: Callable[[ProgressFn | None, str], Awaitable[CallToolResult]]
    """Does the work (given a progress callback and the job's id); returns the tool's result (an
    answer or an error result), never raises."""

    @property
    def key(self) -> str:
        """Identical work of one client has an identical key. (Two clients asking the same are two
        jobs, each its own, that share one upstream request.)"""
        return f"{self.client}\n{self.tool}\n{self.request}"


class JobArgs(BaseModel):
    """Arguments of `cancel_job`."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=200, description='The job_id a call handed back ("j_...").')


class GetResultArgs(JobArgs):
    """Arguments of `get_result`."""

    wait_s: float | None = Field(
        default=None,
        ge=0,
        le=86_400,
        description="Optional: seconds to wait for the outcome before getting the handle back again. "
        "Leave out for the server's default.",
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


class CancelOutcome(Result):
    """Structured content of `cancel_job`."""

    job_id: str = Field(description="The job.")
    status: Literal["cancelled", "finished"] = Field(
        description="cancelled: it was running and is stopped now; finished: it had already ended, nothing changed."
    )


@dataclass(eq=False)
class _Job:
    id: str
    work: Work
    streams: bool
    started: float = field(default_factory=time.monotonic)  # the event loop's clock, on asyncio
    started_wall: float = field(default_factory=time.time)
    done: Done = field(default_factory=Done)
    task: asyncio.Task[None] | None = None
    running: bool = False
    """Its task has begun `_run` (a task cancelled before its first step never runs a line of it)."""
    cancelling: bool = False
    listeners: Listeners = field(default_factory=Listeners)
    waiters: int = 0
    handed_out: bool = False
    cancelled_by_user: bool = False
    result: CallToolResult | None = None
    finished: float | None = None

    def cancel(self) -> None:
        """Stop it: its upstream requests are aborted, and its callers get a `cancelled` result.

        Only this cancels a job's task, natively (an anyio cancel scope around every job cost about 30
        Python calls on every call): `Handles._run` takes a cancellation as the job's end."""
        if self.result is not None or self.cancelling:
            return
        self.cancelling = True
        if self.running and self.task is not None:
            self.task.cancel()

    @property
    def status(self) -> str:
        if self.result is None:
            return "running"
        if not self.result.is_error:
            return "done"
        return "cancelled" if self.cancelled_by_user else "failed"


class Handles:
    """The jobs of one server. Each runs in a plain asyncio task (a third of the cost of an anyio
    task-group spawn, on every call); `aclose` cancels those still running and waits for them."""

    def __init__(
        self,
        *,
        ttl_s: float,
        max_kept: int,
        heartbeat_s: float,
        board: JobBoard | None = None,
        instance: str | None = None,
    ) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._ttl_s = ttl_s
        self._max_kept = max_kept
        self._heartbeat_s = heartbeat_s
        self._board: JobBoard = board if board is not None else LocalBoard()
        self._instance = instance if instance is not None else new_instance_id()
        self._jobs: dict[str, _Job] = {}
        """Every job that can be asked for by id: running ones, and finished handed-out ones."""
        self._running: dict[str, _Job] = {}
        """Running jobs by work key, for identical calls to join."""
        self._kept: OrderedDict[str, _Job] = OrderedDict()
        """Finished handed-out jobs by id, oldest finish first."""
        self._answered: dict[str, _Job] = {}
        """Of those, the ones that answered, by work key: identical calls get their outcome."""
        self._forgotten: OrderedDict[str, str] = OrderedDict()

    async def call(self, work: Work, wait_s: float, on_progress: ProgressFn | None) -> CallToolResult:
        """The outcome of `work` if it is there within `wait_s`, else a handle to it."""
        self._forget_expired()
        answered = self._answered.get(work.key)
        if answered is not None and answered.result is not None:
            return answered.result
        job = self._running.get(work.key)
        if job is None:
            job = _Job(f"j_{self._instance}-{secrets.token_hex(6)}", work, streams=on_progress is not None)
            self._jobs[job.id] = job
            self._running[work.key] = job
            task = job.task = asyncio.get_running_loop().create_task(self._run(job), name=f"job {job.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            log.info("%s: joining job %s, which runs the identical call", work.tool, job.id)
        # Waiting past the deadline is waiting for the outcome: the job ends by then.
        return await self._wait(job, math.inf if wait_s >= work.timeout_s else wait_s, on_progress)

    async def aclose(self) -> None:
        """The server stops: cancel every running job (aborting its upstream requests) and wait for it."""
        for job in list(self._running.values()):
            job.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def get_result(
        self, job_id: str, wait_s: float, on_progress: ProgressFn | None, client: str | None
    ) -> CallToolResult:
        job = await self._find(job_id, "get_result", client)
        if isinstance(job, SharedJob):
            return await self._shared_result(job, wait_s, on_progress)
        if job.result is not None:
            return job.result
        return await self._wait(job, wait_s, on_progress)

    async def cancel(self, job_id: str, client: str | None) -> CallToolResult:
        job = await self._find(job_id, "cancel_job", client)
        if isinstance(job, SharedJob):
            return await self._cancel_shared(job)
        if job.result is not None:
            text = f"Job {job.id} had already finished ({job.status}); nothing was cancelled. get_result returns it."
            return structured(text, CancelOutcome(job_id=job.id, status="finished"))
        self.cancel_here(job.id)
        text = f"Job {job.id} is cancelled: its upstream request to {job.work.labels} was aborted."
        return structured(text, CancelOutcome(job_id=job.id, status="cancelled"))

    def cancel_here(self, job_id: str) -> None:
        """Cancel a running job of this instance (asked here, or by another instance through the board)."""
        job = self._jobs.get(job_id)
        if job is not None and job.result is None:
            job.cancelled_by_user = True
            job.cancel()

    def serving(self) -> Any:
        """The board, live (an async context manager): other instances can reach this one's jobs."""
        return self._board.serving(self.cancel_here)

    async def _shared_result(self, job: SharedJob, wait_s: float, on_progress: ProgressFn | None) -> CallToolResult:
        """get_result for another instance's job: its outcome, its loss, or the handle again."""
        if job.result is None and not job.lost:
            try:
                job = await self._board.wait(job.id, wait_s, on_progress, self._heartbeat_s) or job
            except StateError as err:
                raise shared_state_down("get_result", job.id, str(err)) from None
        if job.result is not None:
            return job.result
        if job.lost:
            return error_result(instance_lost(job.labels, job.id, self._board.lease_s))
        return self._running_result(job)

    async def _cancel_shared(self, job: SharedJob) -> CallToolResult:
        """cancel_job for another instance's job: ask that instance, and wait a moment to see it done."""
        try:
            if job.result is None and not job.lost:
                await self._board.cancel(job.id)
                job = await self._board.wait(job.id, CANCEL_CONFIRM_S, None, math.inf) or job
        except StateError as err:
            raise shared_state_down("cancel_job", job.id, str(err)) from None
        if job.lost:
            text = f"Job {job.id} had already ended: the server instance running it stopped. Nothing runs anymore."
            return structured(text, CancelOutcome(job_id=job.id, status="finished"))
        if job.result is None:
            text = f"Job {job.id} is being cancelled by the server instance running it (it has not confirmed yet)."
            return structured(text, CancelOutcome(job_id=job.id, status="cancelled"))
        if _kind(job.result) == "cancelled":
            text = f"Job {job.id} is cancelled: its upstream request to {job.labels} was aborted."
            return structured(text, CancelOutcome(job_id=job.id, status="cancelled"))
        text = f"Job {job.id} had already finished; nothing was cancelled. get_result returns it."
        return structured(text, CancelOutcome(job_id=job.id, status="finished"))

    async def listing(self, client: str | None) -> dict[str, Any]:
        """What swarm://jobs shows: every job of this client the server knows (on any instance sharing the
        board), without any prompt text."""
        self._forget_expired()
        now = time.monotonic()
        jobs = [self._describe(job, now) for job in self._jobs.values() if job.work.client == client]
        if not self._board.shared:
            return {"jobs": jobs}
        here = {job["id"] for job in jobs}
        try:
            elsewhere = [job for job in await self._board.jobs_of(client) if job.id not in here]
        except StateError as err:
            return {"jobs": jobs, "problem": f"{err}; only this instance's jobs are listed"}
        return {"jobs": jobs + [self._describe_shared(job) for job in elsewhere]}

    async def _wait(self, job: _Job, wait_s: float, on_progress: ProgressFn | None) -> CallToolResult:
        job.waiters += 1
        listeners = job.listeners if job.streams else None
        try:
            await wait_with_progress(
                job.done, on_progress, listeners, job.work.labels, self._heartbeat_s, timeout_s=wait_s
            )
            if job.result is not None:
                return job.result
            job.handed_out = True
        finally:
            job.waiters -= 1
            if job.waiters == 0 and not job.handed_out and job.result is None:
                job.cancel()  # its only callers left before a handle was handed out
        return self._running_result(SharedJob.of(job.id, job.work, job.started_wall))

    async def _outcome(self, job: _Job) -> CallToolResult:
        """The work's outcome: done here, or, when another instance already does identical work, theirs."""
        progress = job.listeners if job.streams else None
        if not self._board.shared:
            return await job.work.run(progress, job.id)
        for _ in range(3):  # a holder that keeps ending without an answer for us: do the work ourselves
            try:
                holder = await self._board.claim(job.id, job.work, job.started_wall)
            except StateError:
                break  # the board is down: go on without sharing
            if holder is None:
                forward = self._board.forwarder(job.id) if job.streams else None
                if forward is not None:
                    job.listeners.append(forward)
                return await job.work.run(progress, job.id)
            log.info(
                "%s: job %s waits for job %s, which another instance runs for the same request",
                job.work.tool,
                job.id,
                holder,
            )
            remaining = job.started + job.work.timeout_s - time.monotonic()
            try:
                shared = await self._board.wait(holder, max(0.0, remaining), progress, self._heartbeat_s)
            except StateError:
                break
            if shared is not None and shared.result is not None and _kind(shared.result) not in _TRY_AGAIN:
                return shared.result
            if time.monotonic() >= job.started + job.work.timeout_s:
                return error_result(follow_deadline(job.work.labels, job.work.timeout_s))
        return await job.work.run(progress, job.id)

    async def _run(self, job: _Job) -> None:
        job.running = True
        try:
            if not job.cancelling:
                job.result = await self._outcome(job)
        except asyncio.CancelledError:  # `_Job.cancel`: the job ends here, with a cancelled result
            if job.task is not None:
                job.task.uncancel()
        except Exception:  # a bug: say so in the log, and give the callers an error instead of silence
            log.exception("%s: job %s failed unexpectedly", job.work.tool, job.id)
            job.result = error_result(UpstreamError(job.work.tool, "failed unexpectedly; see the server's log."))
        finally:
            if job.result is None:
                why = "with cancel_job" if job.cancelled_by_user else "because the server stopped or its caller left"
                detail = f"the job was cancelled {why} before an answer arrived; its upstream request was aborted."
                job.result = error_result(CallCancelledError(job.work.labels, detail))
            job.finished = time.monotonic()
            del self._running[job.work.key]
            if job.handed_out:
                self._keep(job)
            else:
                del self._jobs[job.id]  # its outcome went to its waiting callers; nobody holds its id
            job.done.set()
            if self._board.shared:
                with anyio.CancelScope(shield=True):  # bounded: the board never waits long (see its link)
                    keep_s = self._ttl_s if job.handed_out else FOLLOWERS_KEEP_S
                    await self._board.finish(
                        job.id, job.work, job.started_wall, job.result, keep_s, kept=job.handed_out
                    )

    def _keep(self, job: _Job) -> None:
        self._kept[job.id] = job
        if job.result is not None and not job.result.is_error:
            self._answered[job.work.key] = job
        while len(self._kept) > self._max_kept:
            self._forget(next(iter(self._kept.values())), "evicted")

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for job in list(self._kept.values()):
            if job.finished is None or job.finished + self._ttl_s > now:
                break
            self._forget(job, "expired")

    def _forget(self, job: _Job, why: str) -> None:
        del self._kept[job.id]
        del self._jobs[job.id]
        if self._answered.get(job.work.key) is job:
            del self._answered[job.work.key]
        self._forgotten[job.id] = why
        while len(self._forgotten) > FORGOTTEN_IDS:
            self._forgotten.popitem(last=False)

    async def _find(self, job_id: str, tool: str, client: str | None) -> _Job | SharedJob:
        """A job of this client's, here or on the board; another client's is as unknown as one that never existed."""
        self._forget_expired()
        job = self._jobs.get(job_id)
        if job is not None and job.work.client == client:
            return job
        match = _ID.match(job_id)
        if match is None:
            raise unknown_job(tool, job_id, "malformed")
        if match.group(1) != self._instance:
            if not self._board.shared:
                raise unknown_job(tool, job_id, "restarted")
            try:
                shared = await self._board.find(job_id)
            except StateError as err:
                raise shared_state_down(tool, job_id, str(err)) from None
            if shared is None or shared.client != client:
                raise unknown_job(tool, job_id, "shared")
            return shared
        raise unknown_job(tool, job_id, "never" if job is not None else self._forgotten.get(job_id, "never"))

    def _running_result(self, job: SharedJob) -> CallToolResult:
        """The handle of a job still running (here or on another instance)."""
        elapsed = time.time() - job.started
        running = RunningJob(
            job_id=job.id,
            tool=job.tool,
            providers=list(job.providers),
            elapsed_s=round(elapsed, 1),
            poll_after_s=0.0,
            deadline_in_s=round(max(0.0, job.timeout_s - elapsed), 1),
            forget_after_s=self._ttl_s,
        )
        verb = "are" if len(job.providers) > 1 else "is"
        text = (
            f"{job.labels} {verb} still working on this ({elapsed:.0f} s so far; swarm answers often take "
            f'several minutes). Call get_result with job_id "{job.id}" to collect the answer (it waits for it). '
            "Do not ask again: the job is running and paid for once."
        )
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=running.model_dump())

    def _describe_shared(self, job: SharedJob) -> dict[str, Any]:
        """Another instance's job, as `_describe` shows one of ours."""
        now = time.time()
        if job.result is None:
            status = "lost" if job.lost else "running"
        elif not job.result.is_error:
            status = "done"
        else:
            status = "cancelled" if _kind(job.result) == "cancelled" else "failed"
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
            entry["forget_in_s"] = round(max(0.0, job.finished + self._ttl_s - now), 1)
            entry["usage"] = dict(_usages(job.result, job.providers))
        return entry

    def _describe(self, job: _Job, now: float) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": job.id,
            "tool": job.work.tool,
            "providers": list(job.work.providers),
            "client": job.work.client,
            "status": job.status,
            "started_at": _wall_time(job.started, now),
            "elapsed_s": round((job.finished or now) - job.started, 1),
        }
        if job.finished is not None:
            entry["forget_in_s"] = round(max(0.0, job.finished + self._ttl_s - now), 1)
            entry["usage"] = dict(_usages(job.result, job.work.providers))
        return entry


def _kind(result: CallToolResult) -> str | None:
    """An error result's kind (None for an answer)."""
    if not result.is_error or result.meta is None:
        return None
    error = result.meta.get(ERROR_META)
    return error.get("kind") if isinstance(error, dict) else None


def _wall_time(moment: float, now: float) -> str:
    """An event-loop time as an ISO 8601 UTC time."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - (now - moment)))


def _usages(result: CallToolResult | None, providers: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """Token usage per provider from a finished job's result (none for a failure); `providers` are the
    job's (an answer of one provider does not repeat its name)."""
    content = result.structured_content if result is not None else None
    if not content:
        return
    if "results" in content:
        for entry in content["results"]:
            if "answer" in entry:
                yield entry["provider"], entry["answer"].get("usage")
    else:
        yield providers[0], content.get("usage")
