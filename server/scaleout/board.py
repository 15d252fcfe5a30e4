"""Jobs shared by every instance that points at one Redis (`SWARM_MCP_REDIS_URL`).

What lives in Redis (keys under `swarm-mcp:`):

- `job:<id>`: a job as JSON (`Job`): who asked, what, when, and once finished its outcome as
  a listing reads it (no answer text: a list costs the same whatever the answers hold). Kept until
  its deadline while it runs, then `SWARM_MCP_JOB_TTL` if its handle was handed out, else
  `server.jobs.runner.FOLLOWERS_KEEP_S` (long enough for instances waiting on it to read it).
- `outcome:<id>`: the whole outcome of a finished job, kept as long; read only to collect it.
- `work:<sha256 of tool and request>`: the id of the job doing that work. Claimed atomically (a Lua
  script): a second instance asked the same finds the claim and waits on that job instead of
  sending the request again. A claim whose instance is gone is taken over.
- `instance:<id>`: this instance's lease, renewed every third of `SWARM_MCP_REDIS_LEASE`. A job
  whose instance's lease ran out is reported lost (kind `instance_lost`), never `running` forever.
- `client-jobs:<client>`: a client's job ids by start time, for `swarm://jobs` on any instance.
- the channel `events`: `done <id>`, `progress <id> <message>` and `cancel <id>`, one subscription
  per instance; waiters also re-read the job every third of the lease, so a missed message (Redis
  restarting, say) costs seconds, not the answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from swarm_inference_mcp.server.jobs.outcome import Outcome, outcome_from_json, outcome_to_json
from swarm_inference_mcp.server.jobs.table import Job, UnknownRecordError, Work
from swarm_inference_mcp.server.scaleout.link import PREFIX, RETRY_AFTER_S, TIMEOUT_S, RedisDown, RedisLink
from swarm_inference_mcp.tools.progress import ProgressFn

log = logging.getLogger(__name__)

EVENTS = PREFIX + "events"

_INDEXED = """
local function index(key, score, id, ms)
  redis.call('ZADD', key, score, id)
  if redis.call('PTTL', key) < tonumber(ms) then redis.call('PEXPIRE', key, ms) end
end
"""
"""Adds a job to its client's index (by start time), which lasts at least as long as the job's record."""

_CLAIM = (
    _INDEXED
    + """
index(KEYS[3], ARGV[6], ARGV[1], ARGV[4])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  local instance = string.match(holder, '^j_(%x+)%-')
  if instance and redis.call('EXISTS', ARGV[5] .. instance) == 1 then
    return holder
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return false
"""
)
"""KEYS: the work's claim, the job, the client's index. ARGV: job id, job JSON, claim ms, job ms, instance
key prefix, start time. Returns the live holder of the claim, or nil when it is now this job's."""
INDEX_MAX = 1000
"""Most jobs `jobs_of` lists for one client (the newest)."""

_FINISH = (
    _INDEXED
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[4], ARGV[8], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if ARGV[7] == '1' then index(KEYS[3], ARGV[6], ARGV[1], ARGV[3]) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
)
"""KEYS: the work's claim, the job, the client's index, the outcome. ARGV: job id, job JSON with its listed
outcome, keep ms, channel, message, start time, 1 when its handle was handed out (then it stays listed as
long), and the whole outcome's JSON."""


def _job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def _outcome_key(job_id: str) -> str:
    return f"{PREFIX}outcome:{job_id}"


def _index_key(client: str | None) -> str:
    """A client's jobs by start time ("-" for the stdio and token-less ones)."""
    return f"{PREFIX}client-jobs:{client or '-'}"


def _instance_key(instance: str) -> str:
    return f"{PREFIX}instance:{instance}"


def _work_key(work: Work) -> str:
    """Identical work of any client has one key (unlike `Work.key`, which is per client)."""
    digest = hashlib.sha256(f"{work.tool}\n{work.request}".encode()).hexdigest()
    return f"{PREFIX}work:{digest}"


def _instance_of(job_id: str) -> str:
    return job_id[2:].split("-", 1)[0]


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisBoard:
    """The `JobBoard` of an instance sharing Redis with others."""

    shared = True

    def __init__(self, link: RedisLink, instance: str, *, lease_s: float) -> None:
        self._link = link
        self._instance = instance
        self.lease_s = lease_s
        self._check_s = lease_s / 3
        self._watchers: dict[str, set[MemoryObjectSendStream[tuple[str, str]]]] = {}
        self._on_cancel: Callable[[str], None] = lambda _: None
        client = link.client
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)

    @asynccontextmanager
    async def serving(self, on_cancel: Callable[[str], None]) -> AsyncIterator[None]:
        self._on_cancel = on_cancel
        with suppress(RedisDown):  # gone since start-up was checked: the lease is renewed once it is back
            await self._renew()
        subscribed = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_lease)
            tg.start_soon(self._listen, subscribed)
            with anyio.move_on_after(TIMEOUT_S):
                await subscribed.wait()
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True), suppress(RedisDown):
                    await self._link.run(lambda client: client.delete(_instance_key(self._instance)))

    async def claim(self, job_id: str, work: Work, started: float) -> str | None:
        record = json.dumps(Job.of(job_id, work, started).to_json())
        job_ms = _ms(work.timeout_s + self.lease_s)

        async def run(_: Any) -> Any:
            return await self._claim(
                keys=[_work_key(work), _job_key(job_id), _index_key(work.client)],
                args=[job_id, record, job_ms, job_ms, _instance_key(""), started],
            )

        holder = await self._link.run(run)
        return holder.decode() if holder else None

    async def jobs_of(self, client: str | None) -> list[Job]:
        key = _index_key(client)
        ids = [raw.decode() for raw in await self._link.run(lambda c: c.zrange(key, -INDEX_MAX, -1))]

        async def read(c: Any) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for job_id in ids:
                pipe.get(_job_key(job_id))
                pipe.exists(_instance_key(_instance_of(job_id)))
            found: list[Any] = await pipe.execute()
            return found

        found = await self._link.run(read) if ids else []
        jobs, gone = [], []
        for job_id, raw, alive in zip(ids, found[::2], found[1::2], strict=True):
            if raw is None:
                gone.append(job_id)
                continue
            try:
                job = Job.from_json(json.loads(raw))
            except UnknownRecordError as err:
                log.warning("%s, which this server cannot read; it is not listed", err)
                continue
            job.lost = job.outcome is None and not alive
            if job.outcome is None or job.kept:
                jobs.append(job)
        if gone:
            await self._link.run(lambda c: c.zrem(key, *gone))
        return jobs

    async def finish(
        self, job_id: str, work: Work, started: float, outcome: Outcome, keep_s: float, *, kept: bool
    ) -> None:
        job = Job.of(job_id, work, started)
        job.outcome, job.finished, job.kept = outcome, time.time(), kept
        record, whole = json.dumps(job.to_json(listed=True)), json.dumps(outcome_to_json(outcome))

        async def run(_: Any) -> Any:
            return await self._finish(
                keys=[_work_key(work), _job_key(job_id), _index_key(work.client), _outcome_key(job_id)],
                args=[job_id, record, _ms(keep_s), EVENTS, f"done {job_id}", started, "1" if kept else "0", whole],
            )

        with suppress(RedisDown):  # said once by the link; waiters re-read the job and see it lost or gone
            await self._link.run(run)

    def forwarder(self, job_id: str) -> ProgressFn | None:
        async def forward(_progress: float, message: str) -> None:
            with suppress(RedisDown):
                await self._link.run(lambda client: client.publish(EVENTS, f"progress {job_id} {message}"))

        return forward

    async def find(self, job_id: str) -> Job | None:
        """The job with its whole outcome (the listed one, with no text, is in its record)."""

        async def read(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.get(_job_key(job_id))
            pipe.get(_outcome_key(job_id))
            pipe.exists(_instance_key(_instance_of(job_id)))
            found: list[Any] = await pipe.execute()
            return found

        raw, whole, alive = await self._link.run(read)
        if raw is None:
            return None
        job = Job.from_json(json.loads(raw))
        if job.outcome is not None:
            if whole is None:
                return None  # its outcome expired in the moment between the two: gone, as the record soon is
            job.outcome = outcome_from_json(json.loads(whole))
        job.lost = job.outcome is None and not alive
        return job

    async def wait(self, job_id: str, wait_s: float, on_progress: ProgressFn | None, heartbeat_s: float) -> Job | None:
        send, receive = anyio.create_memory_object_stream[tuple[str, str]](64)
        watchers = self._watchers.setdefault(job_id, set())
        watchers.add(send)
        try:
            job = await self.find(job_id)  # read after watching: a `done` from now on is not missed
            deadline = anyio.current_time() + wait_s
            sent = 0
            last_sent = anyio.current_time()
            while job is not None and job.outcome is None and not job.lost:
                now = anyio.current_time()
                if now >= deadline:
                    break
                if on_progress is not None and now - last_sent >= heartbeat_s:
                    sent += 1
                    last_sent = now
                    elapsed = time.time() - job.started
                    await on_progress(float(sent), f"{job.labels} is working (on another instance); {elapsed:.0f} s")
                    continue
                due = min(deadline, now + self._check_s, last_sent + heartbeat_s if on_progress else math.inf)
                with anyio.move_on_after(due - now):
                    kind, message = await receive.receive()
                    if kind == "progress" and on_progress is not None:
                        sent += 1
                        last_sent = anyio.current_time()
                        await on_progress(float(sent), message)
                        continue
                job = await self.find(job_id)
            return job
        finally:
            watchers.discard(send)
            if not watchers:
                self._watchers.pop(job_id, None)
            send.close()
            receive.close()

    async def cancel(self, job_id: str) -> None:
        await self._link.run(lambda client: client.publish(EVENTS, f"cancel {job_id}"))

    async def _renew(self) -> None:
        await self._link.run(lambda client: client.set(_instance_key(self._instance), "1", px=_ms(self.lease_s)))

    async def _keep_lease(self) -> None:
        while True:
            await anyio.sleep(self._check_s)
            with suppress(RedisDown):
                await self._renew()

    async def _listen(self, subscribed: anyio.Event) -> None:
        """One subscription for the instance; reconnects after Redis comes back."""
        while True:
            pubsub = self._link.client.pubsub()
            try:
                await pubsub.subscribe(EVENTS)
                subscribed.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._dispatch(message["data"].decode())
            except Exception as exc:  # noqa: BLE001 - any failure of the connection: reconnect shortly
                log.debug("Redis event subscription lost (%s); reconnecting", exc)
            finally:
                with anyio.CancelScope(shield=True), suppress(Exception):
                    await pubsub.aclose()
            await anyio.sleep(RETRY_AFTER_S)

    def _dispatch(self, text: str) -> None:
        kind, _, rest = text.partition(" ")
        job_id, _, message = rest.partition(" ")
        if kind == "cancel":
            if _instance_of(job_id) == self._instance:
                self._on_cancel(job_id)
            return
        for send in list(self._watchers.get(job_id, ())):
            with suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                send.send_nowait((kind, message))
