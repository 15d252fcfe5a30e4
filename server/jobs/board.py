"""The jobs other server instances run: what the runner asks when it is one of several.

The runner (`server.jobs.runner`) keeps its own jobs in memory and runs them in its own tasks; a
`JobBoard` is its view of everyone else's. A board stores our own versioned `Job`s, never
a wire type, so two versions of the server sharing one Redis either agree or say they do not.
Two boards:

- `LocalBoard`, the default: this process is the only instance, so there is nothing elsewhere.
  Every method returns at once and the stdio path pays nothing for the seam.
- `server.scaleout.board.RedisBoard`, with `SWARM_MCP_REDIS_URL`: jobs, the claim on identical work,
  progress, cancels and instance liveness live in Redis, so any instance can answer for any job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from swarm_inference_mcp.server.jobs.outcome import Outcome
from swarm_inference_mcp.server.jobs.table import Job, Work
from swarm_inference_mcp.tools.progress import ProgressFn


class JobBoard(Protocol):
    shared: bool
    """Whether other instances exist at all (False: every method is a no-op)."""
    lease_s: float
    """How long an instance may go unheard before its running jobs count as lost."""

    def serving(self, on_cancel: Callable[[str], None]) -> Any:
        """An async context manager: the board is live inside it (listening, renewing this instance's
        lease); `on_cancel(job_id)` is called when another instance asks to cancel one of our jobs."""

    async def claim(self, job_id: str, work: Work, started: float) -> str | None:
        """Announce job `job_id` (doing `work`, started at wall-clock `started`) and claim its work for it.
        Returns None when the work is this job's to do, or the id of an identical job that another live
        instance runs: its outcome is this job's answer. Raises `StateError` when the board is down."""

    async def finish(
        self, job_id: str, work: Work, started: float, outcome: Outcome, keep_s: float, *, kept: bool
    ) -> None:
        """Publish the job's outcome (readable for `keep_s`; `kept`: its handle was handed out) and release
        its claim. Never raises."""

    def forwarder(self, job_id: str) -> ProgressFn | None:
        """Where a streamed job's progress goes so other instances' callers see it (None: nowhere)."""

    async def find(self, job_id: str) -> Job | None:
        """Another instance's job, or None when the board does not know it. Raises `StateError`, and
        `UnknownRecordError` for a job recorded by a server of another version."""

    async def wait(self, job_id: str, wait_s: float, on_progress: ProgressFn | None, heartbeat_s: float) -> Job | None:
        """`find`, after waiting up to `wait_s` for the job to finish (or be lost), relaying its progress
        and sending heartbeats to `on_progress`. Raises as `find` does."""

    async def cancel(self, job_id: str) -> None:
        """Ask the instance running the job to cancel it. Raises `StateError`."""

    async def jobs_of(self, client: str | None) -> list[Job]:
        """The client's jobs on every instance: running ones, and finished ones whose handle was handed
        out, newest last; records of another version are left out. Raises `StateError`."""


class LocalBoard:
    """The only instance: nothing runs elsewhere."""

    shared = False
    lease_s = 0.0

    @asynccontextmanager
    async def serving(self, on_cancel: Callable[[str], None]) -> AsyncIterator[None]:
        yield

    async def claim(self, job_id: str, work: Work, started: float) -> str | None:
        return None

    async def finish(
        self, job_id: str, work: Work, started: float, outcome: Outcome, keep_s: float, *, kept: bool
    ) -> None:
        return None

    def forwarder(self, job_id: str) -> ProgressFn | None:
        return None

    async def find(self, job_id: str) -> Job | None:
        return None

    async def wait(self, job_id: str, wait_s: float, on_progress: ProgressFn | None, heartbeat_s: float) -> Job | None:
        return None

    async def cancel(self, job_id: str) -> None:
        return None

    async def jobs_of(self, client: str | None) -> list[Job]:
        return []
