"""The jobs other server instances run: what `Handles` asks when it is one of several.

The runner (`server.jobs.runner`) keeps its own jobs in memory and runs them in its own tasks; a
`JobBoard` is its view of everyone else's. A board stores our own versioned `JobRecord`s, never
a wire type, so two versions of the server sharing one Redis either agree or say they do not.
Two boards:

- `LocalBoard`, the default: this process is the only instance, so there is nothing elsewhere.
  Every method returns at once and the stdio path pays nothing for the seam.
- `server.redis_board.RedisBoard`, with `SWARM_MCP_REDIS_URL`: jobs, the claim on identical work,
  progress, cancels and instance liveness live in Redis, so any instance can answer for any job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from swarm_inference_mcp.server.jobs.outcome import Outcome, listed_json, outcome_from_json, outcome_to_json
from swarm_inference_mcp.server.jobs.table import Work
from swarm_inference_mcp.tools.progress import ProgressFn

RECORD_VERSION = 2
"""The version of `JobRecord.to_json`'s form; a reader refuses any other (`UnknownRecordError`). Version 2:
the record's outcome is the listed one (no answer text), the whole outcome is kept beside it."""


class UnknownRecordError(Exception):
    """A job record written by a server that stores jobs in another form (another version of this one)."""

    def __init__(self, job_id: str, version: object) -> None:
        super().__init__(f"job {job_id} has a record of version {version!r}")
        self.job_id = job_id
        self.version = version


@dataclass
class JobRecord:
    """A job as every instance sees it (another instance's, found on the board)."""

    id: str
    client: str | None
    tool: str
    providers: tuple[str, ...]
    labels: str
    started: float
    """Wall-clock time (seconds since the epoch)."""
    timeout_s: float
    outcome: Outcome | None = None
    """What it produced, once it finished."""
    lost: bool = False
    """The instance running it stopped before it finished."""
    finished: float | None = None
    """Wall-clock time it finished."""
    kept: bool = False
    """Its handle was handed out, so its outcome is kept for get_result (and listed)."""
    message: str | None = None
    """What it is doing, in words (its latest progress), when this instance runs it; never stored."""
    updated: float | None = None
    """Wall-clock time of that progress."""

    @classmethod
    def of(cls, job_id: str, work: Work, started: float) -> JobRecord:
        """A job as other instances see it, before it finished."""
        return cls(job_id, work.client, work.tool, work.providers, work.labels, started, work.timeout_s)

    def to_json(self, *, listed: bool = False) -> dict[str, Any]:
        """Our versioned record (`lost` is worked out by the reader, never stored); `listed`: with the
        outcome as a listing reads it (`outcome.listed_json`)."""
        encode = listed_json if listed else outcome_to_json
        return {
            "v": RECORD_VERSION,
            "id": self.id,
            "client": self.client,
            "tool": self.tool,
            "providers": list(self.providers),
            "labels": self.labels,
            "started": self.started,
            "timeout_s": self.timeout_s,
            "outcome": None if self.outcome is None else encode(self.outcome),
            "finished": self.finished,
            "kept": self.kept,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        """`to_json`'s inverse; raises `UnknownRecordError` for a record of another version."""
        if data.get("v") != RECORD_VERSION:
            raise UnknownRecordError(str(data.get("id", "?")), data.get("v"))
        outcome = data["outcome"]
        return cls(
            id=data["id"],
            client=data["client"],
            tool=data["tool"],
            providers=tuple(data["providers"]),
            labels=data["labels"],
            started=data["started"],
            timeout_s=data["timeout_s"],
            outcome=None if outcome is None else outcome_from_json(outcome),
            finished=data["finished"],
            kept=data["kept"],
        )


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

    async def find(self, job_id: str) -> JobRecord | None:
        """Another instance's job, or None when the board does not know it. Raises `StateError`, and
        `UnknownRecordError` for a job recorded by a server of another version."""

    async def wait(
        self, job_id: str, wait_s: float, on_progress: ProgressFn | None, heartbeat_s: float
    ) -> JobRecord | None:
        """`find`, after waiting up to `wait_s` for the job to finish (or be lost), relaying its progress
        and sending heartbeats to `on_progress`. Raises as `find` does."""

    async def cancel(self, job_id: str) -> None:
        """Ask the instance running the job to cancel it. Raises `StateError`."""

    async def jobs_of(self, client: str | None) -> list[JobRecord]:
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

    async def find(self, job_id: str) -> JobRecord | None:
        return None

    async def wait(
        self, job_id: str, wait_s: float, on_progress: ProgressFn | None, heartbeat_s: float
    ) -> JobRecord | None:
        return None

    async def cancel(self, job_id: str) -> None:
        return None

    async def jobs_of(self, client: str | None) -> list[JobRecord]:
        return []
