"""What a job is (`Work`: what a call asks; `Job`: the job as every instance sees it, with its `Run` when
it runs here) and the jobs one server process knows: keeping, finding, expiring and evicting them.
No I/O, no awaiting.

The table's invariants, which every method keeps:

- `_jobs` holds every job that can be asked for by id: the running ones and the kept ones.
- `_running` holds each running job (no outcome yet) under its work key, and nothing else: an
  identical call joins the job found there.
- `_kept` holds, per client, the finished jobs whose handle was handed out, oldest finish first, at
  most `max_kept` of each client's: a client's new job evicts that client's oldest, never another's.
  A finished job whose handle never went out is in no dictionary (its outcome went to the callers
  that waited for it).
- `_answered` holds, under its work key, the newest kept job whose outcome is an answer (not a
  failure): an identical call gets that outcome without asking again.
- `_forgotten` remembers why an id is gone (expired or evicted), for the last `FORGOTTEN_IDS` ids.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from swarm_inference_mcp.server.jobs.outcome import (
    Failed,
    Outcome,
    listed_json,
    outcome_from_json,
    outcome_to_json,
    status_of,
)
from swarm_inference_mcp.tools.progress import Listeners, ProgressFn


@dataclass(frozen=True)
class Work:
    """One tool call's upstream work."""

    tool: str
    providers: tuple[str, ...]
    labels: str
    """How people name the providers: "Fortytwo", "Fortytwo and Swarms"."""
    request: str
    """The exact request bodies, as text: identical work asks identically."""
    timeout_s: float
    client: str | None
    """The HTTP client that asked (None over stdio)."""
    run: Callable[[ProgressFn | None, str], Awaitable[Outcome]]
    """Does the work (given a progress callback and the job's id); never raises."""

    @property
    def key(self) -> str:
        """Identical work of one client has an identical key. (Two clients asking the same are two
        jobs, each its own, that share one upstream request.)"""
        return f"{self.client}\n{self.tool}\n{self.request}"

    @classmethod
    def refused(cls, tool: str, client: str | None) -> Work:
        """The work of a call refused before it asked anything (bad arguments, a limit): nothing to run."""

        async def nothing(_progress: ProgressFn | None, _job_id: str) -> Outcome:
            raise AssertionError("a refused call's work never runs")

        return cls(tool, (), tool, "refused", 0.0, client, nothing)


FORGOTTEN_IDS = 10_000
"""How many forgotten job ids are remembered, to say why an id is unknown (expired or evicted)."""


RECORD_VERSION = 2
"""The version of `Job.to_json`'s form; a reader refuses any other (`UnknownRecordError`). Version 2:
the record's outcome is the listed one (no answer text), the whole outcome is kept beside it."""


class UnknownRecordError(Exception):
    """A job record written by a server that stores jobs in another form (another version of this one)."""

    def __init__(self, job_id: str, version: object) -> None:
        super().__init__(f"job {job_id} has a record of version {version!r}")
        self.job_id = job_id
        self.version = version


@dataclass(eq=False)
class Run:
    """A job's run in this process: its work, its task, and who waits on it."""

    work: Work
    streams: bool
    """Its callers asked for progress, so its upstream requests are streamed."""
    started: float
    """On the runner's monotonic clock, as `finished` is: a kept job's expiry and a follower's deadline
    are durations, which a step of the wall clock, or a laptop's sleep, must not shorten."""
    finished: float | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    announced: anyio.Event = field(default_factory=anyio.Event)
    """Set once other instances can find it on the board (at once with no board): only then is it handed out."""
    task: asyncio.Task[None] | None = None
    running: bool = False
    """Its task has begun to run (a task cancelled before its first step never runs a line of it)."""
    cancelling: bool = False
    cancelled_by_user: bool = False
    listeners: Listeners = field(default_factory=Listeners)
    waiters: int = 0


@dataclass(eq=False)
class Job:
    """A job, as every instance sees it: who asked what, when, and what it produced. A job this process
    runs also has its `here`; another instance's, found on the board, has none.

    Its times are the wall clock (seconds since the epoch): clients are shown them and other instances
    compare them. How long it has run or been kept is its `Run`'s, on a monotonic clock."""

    id: str
    client: str | None
    """The HTTP client that asked (None over stdio)."""
    tool: str
    providers: tuple[str, ...]
    labels: str
    started: float
    timeout_s: float
    outcome: Outcome | None = None
    """What it produced, once it finished."""
    lost: bool = False
    """The instance running it stopped before it finished (worked out by the reader, never stored)."""
    finished: float | None = None
    """When it finished."""
    kept: bool = False
    """Its handle was handed out, so its outcome is kept for get_result (and listed)."""
    message: str | None = None
    """What it is doing, in words (its latest progress), when this instance runs it; never stored."""
    updated: float | None = None
    """When that progress came."""
    here: Run | None = None
    """Its run, when this process runs it."""

    @classmethod
    def of(cls, job_id: str, work: Work, started: float, here: Run | None = None) -> Job:
        """A job doing `work`, before it finished."""
        return cls(job_id, work.client, work.tool, work.providers, work.labels, started, work.timeout_s, here=here)

    async def note(self, _progress: float, message: str) -> None:
        """A listener of a streamed job's progress: keeps the latest message, for task status."""
        self.message, self.updated = message, time.time()

    @property
    def status(self) -> str:
        return status_of(self.outcome)

    def to_json(self, *, listed: bool = False) -> dict[str, Any]:
        """Our versioned record (`lost`, `message` and `here` are never stored); `listed`: with the outcome
        as a listing reads it (`outcome.listed_json`)."""
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
    def from_json(cls, data: dict[str, Any]) -> Job:
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


def _here(job: Job) -> Run:
    """A job's run (the table holds this process's jobs only)."""
    assert job.here is not None  # noqa: S101 - the runner adds only jobs of this process
    return job.here


def _key(job: Job) -> str:
    return _here(job).work.key


class JobTable:
    """See the module docstring for what each dictionary holds."""

    def __init__(self, *, ttl_s: float, max_kept: int) -> None:
        self.ttl_s = ttl_s
        self._max_kept = max_kept
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, Job] = {}
        self._kept: dict[str | None, OrderedDict[str, Job]] = {}
        self._answered: dict[str, Job] = {}
        self._forgotten: OrderedDict[str, str] = OrderedDict()

    def add(self, job: Job) -> None:
        """A job that starts now; identical work joins it until it finishes."""
        self._jobs[job.id] = job
        self._running[_key(job)] = job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def running(self, key: str) -> Job | None:
        return self._running.get(key)

    def running_of(self, client: str | None) -> int:
        """How many jobs of this client are running."""
        return sum(1 for job in self._running.values() if job.client == client)

    def running_jobs(self) -> list[Job]:
        return list(self._running.values())

    def answered(self, key: str) -> Job | None:
        """A kept job that answered this work (its outcome serves an identical call)."""
        return self._answered.get(key)

    def finish(self, job: Job, now: float) -> None:
        """`job` has its outcome: keep it if its handle was handed out, else forget it at once."""
        _here(job).finished, job.finished = now, time.time()
        del self._running[_key(job)]
        if not job.kept:
            del self._jobs[job.id]
            return
        kept = self._kept.setdefault(job.client, OrderedDict())
        kept[job.id] = job
        if not isinstance(job.outcome, Failed):
            self._answered[_key(job)] = job
        while len(kept) > self._max_kept:
            self._forget(next(iter(kept.values())), "evicted")

    def expire(self, now: float) -> None:
        """Forget the kept jobs that finished `ttl_s` or longer before `now`."""
        for kept in list(self._kept.values()):
            for job in list(kept.values()):
                finished = _here(job).finished
                if finished is None or finished + self.ttl_s > now:
                    break
                self._forget(job, "expired")

    def why_unknown(self, job_id: str) -> str:
        """Why this process does not know the id: expired, evicted, or never (it never handed it out)."""
        return self._forgotten.get(job_id, "never")

    def of_client(self, client: str | None) -> list[Job]:
        return [job for job in self._jobs.values() if job.client == client]

    def _forget(self, job: Job, why: str) -> None:
        kept = self._kept[job.client]
        del kept[job.id]
        if not kept:
            del self._kept[job.client]
        del self._jobs[job.id]
        if self._answered.get(_key(job)) is job:
            del self._answered[_key(job)]
        self._forgotten[job.id] = why
        while len(self._forgotten) > FORGOTTEN_IDS:
            self._forgotten.popitem(last=False)
