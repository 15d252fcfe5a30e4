"""The other-instance path: a job of ours that follows another instance's identical job, and the
`get_result`/`cancel_job` of a job that another instance runs.

Every job claims its work on the board first. When another live instance already runs identical
work, the job waits for that job's outcome instead of sending the request again, and does the work
itself only if that job ends without one (cancelled, or its instance lost). With the `LocalBoard`
(one process) nothing here is reached: the runner runs the work itself.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from swarm_inference_mcp.server.accounting.ledger import StateError
from swarm_inference_mcp.server.jobs.board import JobBoard
from swarm_inference_mcp.server.jobs.handles import CancelReport
from swarm_inference_mcp.server.jobs.outcome import Failed, Outcome, SideFailed, Sides
from swarm_inference_mcp.server.jobs.table import Job, Run, UnknownRecordError
from swarm_inference_mcp.tools.errors.sentences import (
    follow_deadline,
    foreign_record,
    instance_lost,
    shared_state_down,
    unknown_job,
)
from swarm_inference_mcp.tools.progress import ProgressFn

log = logging.getLogger(__name__)

CANCEL_CONFIRM_S = 5.0
"""How long cancel_job waits for another instance to confirm a cancel."""
FOLLOW_TRIES = 3
"""How often a job follows holders that end without an answer for it before it does the work itself."""
_TRY_AGAIN = frozenset({"cancelled", "instance_lost"})
"""Outcomes of another instance's job that leave a job waiting on it still wanting an answer."""


class Following:
    def __init__(self, board: JobBoard, heartbeat_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.board = board
        self._heartbeat_s = heartbeat_s
        self._clock = clock

    async def run_or_follow(self, job: Job, here: Run) -> Outcome:
        """The work's outcome: done here, or, when another instance already does identical work, theirs
        (only with a shared board: the runner runs a job's work itself otherwise)."""
        progress = here.listeners if here.streams else None
        for _ in range(FOLLOW_TRIES):
            try:
                holder = await self.board.claim(job.id, here.work, job.started)
            except StateError:
                break  # the board is down: go on without sharing
            finally:
                here.announced.set()
            if holder is None:
                forward = self.board.forwarder(job.id) if here.streams else None
                if forward is not None:
                    here.listeners.append(forward)
                return await here.work.run(progress, job.id)
            log.info("%s: job %s waits for job %s, which another instance runs", job.tool, job.id, holder)
            remaining = here.started + job.timeout_s - self._clock()
            try:
                followed = await self.board.wait(holder, max(0.0, remaining), progress, self._heartbeat_s)
            except (StateError, UnknownRecordError):
                break
            outcome = followed.outcome if followed is not None else None
            if outcome is not None and not _not_ours(outcome):
                return outcome
            if self._clock() >= here.started + job.timeout_s:
                return Failed.of(follow_deadline(job.labels, job.timeout_s))
        return await here.work.run(progress, job.id)

    async def find(self, job_id: str, tool: str, client: str | None) -> Job:
        """Another instance's job of this client's; raises the `CallError` that says why there is none."""
        if not self.board.shared:
            raise unknown_job(tool, job_id, "restarted")
        try:
            job = await self.board.find(job_id)
        except StateError as err:
            raise shared_state_down(tool, job_id, str(err)) from None
        except UnknownRecordError as err:
            raise foreign_record(tool, job_id, err.version) from None
        if job is None or job.client != client:
            raise unknown_job(tool, job_id, "shared")
        return job

    async def result(self, job: Job, wait_s: float, on_progress: ProgressFn | None) -> Outcome | Job:
        """get_result for another instance's job: its outcome, its loss, or the job (still running)."""
        if job.outcome is None and not job.lost:
            try:
                job = await self.board.wait(job.id, wait_s, on_progress, self._heartbeat_s) or job
            except StateError as err:
                raise shared_state_down("get_result", job.id, str(err)) from None
            except UnknownRecordError as err:
                raise foreign_record("get_result", job.id, err.version) from None
        if job.outcome is not None:
            return job.outcome
        if job.lost:
            return Failed.of(instance_lost(job.labels, job.id, self.board.lease_s))
        return job

    async def cancel(self, job: Job) -> CancelReport:
        """cancel_job for another instance's job: ask that instance, and wait a moment to see it done."""
        try:
            if job.outcome is None and not job.lost:
                await self.board.cancel(job.id)
                job = await self.board.wait(job.id, CANCEL_CONFIRM_S, None, math.inf) or job
        except StateError as err:
            raise shared_state_down("cancel_job", job.id, str(err)) from None
        except UnknownRecordError as err:
            raise foreign_record("cancel_job", job.id, err.version) from None
        if job.lost:
            return CancelReport(job.id, job.labels, "lost")
        if job.outcome is None:
            return CancelReport(job.id, job.labels, "unconfirmed")
        if isinstance(job.outcome, Failed) and job.outcome.kind == "cancelled":
            return CancelReport(job.id, job.labels, "cancelled")
        return CancelReport(job.id, job.labels, "finished")


def _not_ours(outcome: Outcome) -> bool:
    """Whether a followed job's outcome leaves this job still wanting an answer: that job ended without
    one (cancelled, its instance lost), or was refused for reasons of its own client's."""
    if isinstance(outcome, Failed):
        return outcome.kind in _TRY_AGAIN or outcome.failure.personal
    if isinstance(outcome, Sides):
        return any(isinstance(side, SideFailed) and side.failure.personal for side in outcome.sides)
    return False
