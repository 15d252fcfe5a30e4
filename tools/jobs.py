"""Never pay twice for one answer: each distinct upstream request runs once.

A job is one upstream call, keyed by provider and the exact request body. A caller whose request is
already in flight joins that job instead of starting another (a client that retries after its own
timeout joins the running swarm); with `SWARM_MCP_CACHE_TTL` a finished answer also serves exact
repeats for a while. Jobs run in the server's task group, not the caller's task, so the first caller
leaving does not kill the job for the others; when every caller has left, the job is cancelled and
its HTTP request aborted. Each job is counted once in the ledger, and a new one is refused once
the token budget is spent.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from anyio.abc import TaskGroup

from tools.completion import Completion
from tools.errors import CallCancelledError, UpstreamError
from tools.ledger import Ledger
from tools.progress import ProgressFn, ProgressReporter
from tools.upstream import Upstream

log = logging.getLogger(__name__)


@dataclass
class _Job:
    provider: str
    streams: bool
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    waiters: int = 0
    listeners: list[ProgressFn] = field(default_factory=list)
    result: Completion | None = None
    error: UpstreamError | None = None
    crash: Exception | None = None

    async def progress(self, progress: float, message: str) -> None:
        for listener in list(self.listeners):
            await listener(progress, message)


class Jobs:
    def __init__(self, upstream: Upstream, ledger: Ledger, task_group: TaskGroup, cache_ttl_s: float = 0.0) -> None:
        self.upstream = upstream
        self.ledger = ledger
        self._tg = task_group
        self._cache_ttl_s = cache_ttl_s
        self._running: dict[str, _Job] = {}
        self._cache: dict[str, tuple[float, Completion]] = {}

    async def complete(
        self, provider: str, body: dict[str, Any], *, timeout_s: float, on_progress: ProgressFn | None = None
    ) -> Completion:
        """The answer to `body`: from the cache, from a job already running, or from a new job."""
        endpoint = self.upstream.endpoints[provider]
        endpoint.require_key()
        key = provider + "\n" + json.dumps(body, sort_keys=True, separators=(",", ":"))
        cached = self._cached(key)
        if cached is not None:
            return cached
        job = self._running.get(key)
        if job is None:
            self.ledger.check_budget(provider, endpoint.spec.label)
            job = _Job(provider, streams=on_progress is not None)
            self._running[key] = job
            self._tg.start_soon(self._run, key, job, body, timeout_s)
        else:
            log.info("%s: joining an identical request already in flight", endpoint.spec.label)
        listener = on_progress if job.streams else None
        if listener is not None:
            job.listeners.append(listener)
        job.waiters += 1
        try:
            if on_progress is not None and listener is None:
                await self._wait_with_heartbeats(job, on_progress, endpoint.spec.label)
            else:
                await job.done.wait()
        finally:
            job.waiters -= 1
            if listener is not None:
                job.listeners.remove(listener)
            if job.waiters == 0 and not job.done.is_set():
                job.scope.cancel()  # nobody wants the answer any more: abort the upstream request
        if job.crash is not None:
            raise job.crash
        if job.error is not None:
            raise job.error  # shared by every caller of the job; callers only read it
        assert job.result is not None  # noqa: S101 - a finished job has a result, an error or a crash
        return job.result

    async def _wait_with_heartbeats(self, job: _Job, on_progress: ProgressFn, label: str) -> None:
        """Join a job that is not streamed (its first caller asked for no progress): this caller
        still gets heartbeats, so its client does not time out while the swarm works."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(ProgressReporter(on_progress, label, self.upstream.heartbeat_s).run_heartbeats)
            await job.done.wait()
            tg.cancel_scope.cancel()

    async def _run(self, key: str, job: _Job, body: dict[str, Any], timeout_s: float) -> None:
        label = self.upstream.endpoints[job.provider].spec.label
        try:
            with job.scope:
                try:
                    on_progress = job.progress if job.streams else None
                    job.result = await self.upstream.complete(
                        job.provider, body, timeout_s=timeout_s, on_progress=on_progress
                    )
                except UpstreamError as err:
                    job.error = err
                except Exception as exc:
                    log.exception("%s: the call failed unexpectedly", label)
                    job.crash = exc
            if job.scope.cancelled_caught:
                job.error = CallCancelledError(label, "the call was cancelled before an answer arrived.")
            if job.result is not None:
                self.ledger.record(job.provider, job.result.usage, failed=False)
                if self._cache_ttl_s > 0:
                    self._cache[key] = (anyio.current_time() + self._cache_ttl_s, job.result)
            else:
                self.ledger.record(job.provider, None, failed=True)
        finally:
            if job.result is None and job.error is None and job.crash is None:
                job.error = CallCancelledError(label, "the server shut down before an answer arrived.")
            del self._running[key]
            job.done.set()

    def _cached(self, key: str) -> Completion | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, completion = entry
        if anyio.current_time() >= expires:
            del self._cache[key]
            return None
        return replace(completion, cached=True)
