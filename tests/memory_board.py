"""A `JobBoard` that keeps its records in one process's memory: several boards on one `Space` are
several instances sharing it, as `RedisBoard`s share one Redis. For unit tests of the job table's
neighbours (the shared path, the runner); `tests/test_boards.py` holds it and the Redis board (on a
real Redis) to one contract.

Records go through `Job.to_json` and back, as through Redis, so what is shared is what would be
stored.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from swarm_inference_mcp.server.accounting.ledger import StateError
from swarm_inference_mcp.server.jobs.outcome import Outcome
from swarm_inference_mcp.server.jobs.table import Job, UnknownRecordError, Work
from swarm_inference_mcp.tools.progress import ProgressFn


@dataclass
class Space:
    """What the instances share: records, claims, live instances, and a change signal."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)
    alive: set[str] = field(default_factory=set)
    cancels: dict[str, Callable[[str], None]] = field(default_factory=dict)
    changed: anyio.Event = field(default_factory=anyio.Event)
    down: bool = False

    def touch(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


def _instance_of(job_id: str) -> str:
    return job_id[2:].split("-", 1)[0]


class MemoryBoard:
    shared = True
    lease_s = 1.0

    def __init__(self, space: Space, instance: str) -> None:
        self.space = space
        self.instance = instance

    def _check(self) -> None:
        if self.space.down:
            raise StateError("the shared state is down")

    @asynccontextmanager
    async def serving(self, on_cancel: Callable[[str], None]) -> AsyncIterator[None]:
        self.space.alive.add(self.instance)
        self.space.cancels[self.instance] = on_cancel
        try:
            yield
        finally:
            self.space.alive.discard(self.instance)
            self.space.cancels.pop(self.instance, None)
            self.space.touch()

    async def claim(self, job_id: str, work: Work, started: float) -> str | None:
        self._check()
        self.space.records[job_id] = Job.of(job_id, work, started).to_json()
        key = f"{work.tool}\n{work.request}"
        holder = self.space.claims.get(key)
        if holder is not None and holder != job_id and _instance_of(holder) in self.space.alive:
            return holder
        self.space.claims[key] = job_id
        return None

    async def finish(
        self, job_id: str, work: Work, started: float, outcome: Outcome, keep_s: float, *, kept: bool
    ) -> None:
        record = Job.of(job_id, work, started)
        record.outcome, record.finished, record.kept = outcome, started + 1, kept
        self.space.records[job_id] = record.to_json()
        key = f"{work.tool}\n{work.request}"
        if self.space.claims.get(key) == job_id:
            del self.space.claims[key]
        self.space.touch()

    def forwarder(self, job_id: str) -> ProgressFn | None:
        return None

    async def find(self, job_id: str) -> Job | None:
        self._check()
        raw = self.space.records.get(job_id)
        if raw is None:
            return None
        record = Job.from_json(raw)
        record.lost = record.outcome is None and _instance_of(job_id) not in self.space.alive
        return record

    async def wait(self, job_id: str, wait_s: float, on_progress: ProgressFn | None, heartbeat_s: float) -> Job | None:
        with anyio.move_on_after(wait_s if math.isfinite(wait_s) else math.inf):
            while True:
                changed = self.space.changed
                record = await self.find(job_id)
                if record is None or record.outcome is not None or record.lost:
                    return record
                await changed.wait()
        return await self.find(job_id)

    async def cancel(self, job_id: str) -> None:
        self._check()
        on_cancel = self.space.cancels.get(_instance_of(job_id))
        if on_cancel is not None:
            on_cancel(job_id)

    async def jobs_of(self, client: str | None) -> list[Job]:
        self._check()
        jobs = []
        for job_id, raw in list(self.space.records.items()):
            if raw["client"] != client:
                continue
            try:
                job = await self.find(job_id)
            except UnknownRecordError:
                continue  # as the Redis board does: another version's record is not listed
            if job is not None and (job.outcome is None or job.kept):
                jobs.append(job)
        return jobs
