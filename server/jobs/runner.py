"""Running jobs: a slow answer outlives the host's patience without being paid for twice.

Every ask_* call runs as a job in an asyncio task of the server's own, and the call waits for it at
most `wait_s`. An outcome in time is returned as it is; otherwise the call gets the job itself
(still running), which the tool renders as a handle that `get_result` collects later (`cancel_job`
stops it).

Who owns a job: until a handle is handed out, its callers do; when the last of them leaves (the
client cancelled), the job is cancelled and its upstream requests aborted. Once a handle is out,
the server does: the job ends only when it finishes, reaches its deadline, is cancelled with
`cancel_job`, or the server stops. What is kept, and for how long, is `server.jobs.table`'s.
Another instance's jobs are reached through `server.jobs.following`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import anyio

from swarm_inference_mcp.server.accounting.ledger import StateError
from swarm_inference_mcp.server.jobs.board import JobBoard, LocalBoard
from swarm_inference_mcp.server.jobs.following import Following
from swarm_inference_mcp.server.jobs.handles import CancelReport, listed
from swarm_inference_mcp.server.jobs.outcome import Failed, Outcome, status_of
from swarm_inference_mcp.server.jobs.table import Job, JobTable, Run, UnknownRecordError, Work
from swarm_inference_mcp.server.observe import Observer
from swarm_inference_mcp.tools.errors.sentences import cancelled_job, instance_lost, job_bug, too_many_jobs, unknown_job
from swarm_inference_mcp.tools.progress import ProgressFn, wait_with_progress

log = logging.getLogger(__name__)

FOLLOWERS_KEEP_S = 120.0
"""How long the board keeps the outcome of a job nobody holds a handle to, for instances waiting on it."""
_ID = re.compile(r"^j_([0-9a-f]{6})-(?:[0-9a-f]{24}|[0-9a-f]{12})$")
"""A job id: its instance, then 96 random bits (48 before version 0.2, still recognised as another process's)."""

Reply = Outcome | Job
"""What a call gets: the outcome, or the job still running."""


def new_instance_id() -> str:
    """The id of one server process, the first part of every job id it hands out."""
    return secrets.token_hex(3)


class JobRunner:
    """The jobs of one server. `aclose` cancels those still running and waits for them."""

    def __init__(
        self,
        *,
        ttl_s: float,
        max_kept: int,
        heartbeat_s: float,
        board: JobBoard | None = None,
        instance: str | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock`: the jobs' monotonic clock (how long they ran, what has expired); tests move it instead
        of waiting out a TTL."""
        self._clock = clock
        self.table = JobTable(ttl_s=ttl_s, max_kept=max_kept)
        self.ttl_s = ttl_s
        """How long a finished job whose handle was handed out is kept."""
        self._observer = observer
        self.following = Following(board if board is not None else LocalBoard(), heartbeat_s, clock)
        self._board = self.following.board
        self._heartbeat_s = heartbeat_s
        self._instance = instance if instance is not None else new_instance_id()
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(
        self,
        work: Work,
        wait_s: float,
        on_progress: ProgressFn | None,
        *,
        stream: bool = False,
        job_limit: int | None = None,
        hand_out: bool = False,
    ) -> Reply:
        """The outcome of `work` if it is there within `wait_s`, else the job still running. `stream`: run a
        new job streamed even without a caller's progress, so that its status says what it is doing.
        `job_limit`: most running jobs of its client; a new one past it is refused (`RateLimitedError`).
        `hand_out`: an answer kept from identical work comes as a finished job of its own."""
        self.table.expire(self._clock())
        answered = self.table.answered(work.key)
        if answered is not None and answered.outcome is not None:
            return self.adopt(work, answered.outcome) if hand_out else answered.outcome
        job = self.table.running(work.key)
        if job is None and job_limit is not None:
            self._refuse_past(work, job_limit)
        if job is None:
            job, here = self._new(work, streams=stream or on_progress is not None)
            if here.streams:
                here.listeners.append(job.note)
            self.table.add(job)
            task = here.task = asyncio.get_running_loop().create_task(self._run(job, here), name=f"job {job.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            log.info("%s: joining job %s, which runs the identical call", work.tool, job.id)
        # Waiting past the deadline is waiting for the outcome: the job ends by then.
        return await self._wait(job, math.inf if wait_s >= work.timeout_s else wait_s, on_progress)

    def _refuse_past(self, work: Work, job_limit: int) -> None:
        """A new job of a client that already runs `job_limit` of them is refused, before anything is queued."""
        if work.client is not None and self.table.running_of(work.client) >= job_limit:
            if self._observer is not None:
                self._observer.refused("max_jobs_per_client", work.client)
            raise too_many_jobs(work.labels, work.client, job_limit)

    def adopt(self, work: Work, outcome: Outcome) -> Job:
        """A job that finished as it was asked for (an answer kept from an identical call, a refusal), kept
        like any handed-out job: for a client that must be handed a job whatever happens."""
        job, here = self._new(work, streams=False)
        job.outcome, job.kept = outcome, True
        self.table.add(job)
        self.table.finish(job, self._clock())
        here.done.set()
        return job

    def kept(self, work: Work, outcome: Outcome) -> str:
        """The id of a kept job with this outcome of `work` (one an identical call left, or a new one): a
        long answer is read from it a page at a time."""
        answered = self.table.answered(work.key)
        if answered is not None and answered.outcome is outcome:
            return answered.id
        return self.adopt(work, outcome).id

    async def snapshot(self, job_id: str, tool: str, client: str | None) -> Job:
        """A job of this client's as it stands (here or on another instance), without waiting."""
        job = await self._find(job_id, tool, client)
        if job.lost and job.outcome is None:
            job.outcome = Failed.of(instance_lost(job.labels, job.id, self._board.lease_s))
        return job

    async def records(self, client: str | None) -> tuple[list[Job], str | None]:
        """Every job of this client the server knows (on any instance sharing the board), oldest first, and
        why only this instance's are there (Redis down), if so."""
        self.table.expire(self._clock())
        here = self.table.of_client(client)
        if not self._board.shared:
            return here, None
        ids = {job.id for job in here}
        try:
            elsewhere = [job for job in await self._board.jobs_of(client) if job.id not in ids]
        except StateError as err:
            return here, f"{err}; only this instance's jobs are listed"
        return sorted(here + elsewhere, key=lambda job: job.started), None

    def _new(self, work: Work, *, streams: bool) -> tuple[Job, Run]:
        """A job of this process doing `work`, and its run; not in the table yet."""
        here = Run(work, streams=streams, started=self._clock())
        return Job.of(f"j_{self._instance}-{secrets.token_hex(12)}", work, time.time(), here), here

    async def get_result(self, job_id: str, wait_s: float, on_progress: ProgressFn | None, client: str | None) -> Reply:
        job = await self._find(job_id, "get_result", client)
        if job.here is None:
            return await self.following.result(job, wait_s, on_progress)
        if job.outcome is not None:
            return job.outcome
        return await self._wait(job, wait_s, on_progress)

    async def cancel(self, job_id: str, client: str | None) -> CancelReport:
        job = await self._find(job_id, "cancel_job", client)
        if job.here is None:
            return await self.following.cancel(job)
        if job.outcome is not None:
            return CancelReport(job.id, job.labels, "finished", job.status)
        self.cancel_here(job.id)
        return CancelReport(job.id, job.labels, "cancelled")

    def cancel_here(self, job_id: str) -> None:
        """Cancel a running job of this instance (asked here, or by another instance through the board)."""
        job = self.table.get(job_id)
        if job is not None and job.here is not None and job.outcome is None:
            job.here.cancelled_by_user = True
            self._stop(job)

    def serving(self) -> Any:
        """The board, live (an async context manager): other instances can reach this one's jobs."""
        return self._board.serving(self.cancel_here)

    async def aclose(self) -> None:
        """The server stops: cancel every running job (aborting its upstream requests) and wait for it."""
        for job in self.table.running_jobs():
            self._stop(job)
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def listing(self, client: str | None) -> dict[str, Any]:
        """What swarm://jobs shows: every job of this client the server knows (on any instance sharing the
        board), without any prompt text."""
        records, problem = await self.records(client)
        now = time.time()
        listing: dict[str, Any] = {
            "jobs": [
                listed(job, status_of(job.outcome, lost=job.lost), self._forget_in_s(job, now), now) for job in records
            ]
        }
        if problem is not None:
            listing["problem"] = problem
        return listing

    def _forget_in_s(self, job: Job, now: float) -> float | None:
        """How long a finished job is still kept: by this process's clock for its own jobs (the clock their
        expiry reads, which a sleeping laptop does not advance), by the wall clock (`now`) for another's."""
        if job.here is not None and job.here.finished is not None:
            return max(0.0, job.here.finished + self.table.ttl_s - self._clock())
        if job.finished is not None:
            return max(0.0, job.finished + self.table.ttl_s - now)
        return None

    def _stop(self, job: Job) -> None:
        """Stop a job of this process: its upstream requests are aborted, and its callers get a `cancelled`
        outcome. Only this cancels a job's task; `_run` takes the cancellation as the job's end."""
        here = job.here
        if here is None or job.outcome is not None or here.cancelling:
            return
        here.cancelling = True
        if here.running and here.task is not None:
            here.task.cancel()

    async def _wait(self, job: Job, wait_s: float, on_progress: ProgressFn | None) -> Reply:
        here = job.here
        assert here is not None  # noqa: S101 - the callers pass a job of this process
        here.waiters += 1
        listeners = here.listeners if here.streams else None
        try:
            if on_progress is None:
                with anyio.move_on_after(wait_s):
                    await here.done.wait()
            else:
                await wait_with_progress(
                    here.done, on_progress, listeners, job.labels, self._heartbeat_s, timeout_s=wait_s
                )
            if job.outcome is not None:
                return job.outcome
            job.kept = True
            await here.announced.wait()  # a handle another instance cannot resolve yet is no handle
        finally:
            here.waiters -= 1
            if here.waiters == 0 and not job.kept and job.outcome is None:
                self._stop(job)  # its only callers left before a handle was handed out
        return job

    async def _run(self, job: Job, here: Run) -> None:
        here.running = True
        try:
            if self._board.shared and not here.cancelling:  # another instance may run the same work already
                job.outcome = await self.following.run_or_follow(job, here)
            elif not here.cancelling:
                here.announced.set()
                job.outcome = await here.work.run(here.listeners if here.streams else None, job.id)
        except asyncio.CancelledError:  # `_stop`: the job ends here, with a cancelled outcome
            if here.task is not None:
                here.task.uncancel()
        except Exception:  # a bug: say so in the log, and give the callers an error instead of silence
            log.exception("%s: job %s failed unexpectedly", job.tool, job.id)
            job.outcome = Failed.of(job_bug(job.tool))
        finally:
            here.announced.set()
            if job.outcome is None:
                job.outcome = Failed.of(cancelled_job(job.labels, by_user=here.cancelled_by_user))
            self.table.finish(job, self._clock())
            here.done.set()
            if self._board.shared:
                with anyio.CancelScope(shield=True):  # bounded: the board never waits long (see its link)
                    keep_s = self.table.ttl_s if job.kept else FOLLOWERS_KEEP_S
                    await self._board.finish(job.id, here.work, job.started, job.outcome, keep_s, kept=job.kept)

    async def _find(self, job_id: str, tool: str, client: str | None) -> Job:
        """A job of this client's, here or on the board; another client's is as unknown as one that never existed."""
        self.table.expire(self._clock())
        job = self.table.get(job_id)
        if job is not None and job.client == client:
            return job
        match = _ID.match(job_id)
        if match is None:
            raise unknown_job(tool, job_id, "malformed")
        if match.group(1) != self._instance:
            return await self.following.find(job_id, tool, client)
        if job is None and self._board.shared:  # forgotten here (evicted, expired) while the board still keeps it
            with suppress(StateError, UnknownRecordError):
                record = await self._board.find(job_id)
                if record is not None and record.client == client:
                    return record
        raise unknown_job(tool, job_id, "never" if job is not None else self.table.why_unknown(job_id))
