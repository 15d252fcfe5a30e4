"""The other-instance path, with two runners sharing an in-memory board: identical work is done once,
a job is collected and cancelled through the other instance, a lost instance and a record of another
version are each one sentence, and every outcome survives its trip through a record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import anyio
import pytest

from swarm_inference_mcp.server.jobs.outcome import Answered, Failed, Failure, Outcome, SideFailed, Sides, Trace
from swarm_inference_mcp.server.jobs.runner import JobRunner
from swarm_inference_mcp.server.jobs.table import Job, Work
from swarm_inference_mcp.tools.errors.sentences import client_budget_spent
from swarm_inference_mcp.tools.errors.tree import ConfigError, UnknownJobError
from swarm_inference_mcp.tools.models import Answer, ChoiceOut, Usage
from tests.memory_board import MemoryBoard, Space

pytestmark = pytest.mark.anyio

ANSWER = Answered(
    "swarms",
    Answer(text="yes", usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)),
    Trace(latency_ms=5, attempts=1, model="m", id="c1"),
)


@dataclass
class Upstream:
    """Work that runs until released, counting how often it ran."""

    runs: int = 0
    release: anyio.Event = field(default_factory=anyio.Event)

    def work(self, client: str | None = "alice", request: str = "body") -> Work:
        async def run(_progress: object, _job_id: str) -> Outcome:
            self.runs += 1
            await self.release.wait()
            return ANSWER

        return Work("ask_swarm", ("swarms",), "Swarms", request, 30.0, client, run)


@asynccontextmanager
async def instances(space: Space, *names: str) -> AsyncIterator[list[JobRunner]]:
    async with AsyncExitStack() as stack:
        runners = []
        for name in names:
            runner = JobRunner(ttl_s=60, max_kept=10, heartbeat_s=60, board=MemoryBoard(space, name), instance=name)
            await stack.enter_async_context(runner.serving())
            stack.push_async_callback(runner.aclose)
            runners.append(runner)
        yield runners


async def test_identical_work_on_two_instances_runs_once() -> None:
    upstream, space = Upstream(), Space()
    async with instances(space, "aaaaaa", "bbbbbb") as (a, b):
        first = await a.call(upstream.work(), 0, None)
        assert isinstance(first, Job)
        results: list[object] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _into(results, b.call(upstream.work(), 30, None)))
            await anyio.wait_all_tasks_blocked()
            upstream.release.set()
        assert results == [ANSWER]
        assert upstream.runs == 1
        assert await b.get_result(first.id, 5, None, "alice") == ANSWER  # the handle works on the other one


async def _into(results: list[object], call: object) -> None:
    results.append(await call)  # type: ignore[misc]


async def test_another_clients_id_is_unknown_on_every_instance() -> None:
    upstream, space = Upstream(), Space()
    async with instances(space, "aaaaaa", "bbbbbb") as (a, b):
        handle = await a.call(upstream.work(client="alice"), 0, None)
        assert isinstance(handle, Job)
        for runner in (a, b):
            with pytest.raises(UnknownJobError):
                await runner.get_result(handle.id, 0, None, "bob")
        upstream.release.set()


async def test_a_job_is_cancelled_through_the_other_instance() -> None:
    upstream, space = Upstream(), Space()
    async with instances(space, "aaaaaa", "bbbbbb") as (a, b):
        handle = await a.call(upstream.work(), 0, None)
        assert isinstance(handle, Job)
        report = await b.cancel(handle.id, "alice")
        assert report.was == "cancelled"
        outcome = await a.get_result(handle.id, 5, None, "alice")
        assert isinstance(outcome, Failed)
        assert outcome.kind == "cancelled"
        assert "with cancel_job" in outcome.failure.sentence
        assert (await a.cancel(handle.id, "alice")).was == "finished"  # here: it had ended, cancelled


async def test_a_lost_instances_job_is_one_sentence() -> None:
    upstream, space = Upstream(), Space()
    async with instances(space, "bbbbbb") as (b,), instances(space, "aaaaaa") as (a,):
        handle = await a.call(upstream.work(), 0, None)
        assert isinstance(handle, Job)
        space.alive.discard("aaaaaa")  # its lease ran out while the job still ran
        outcome = await b.get_result(handle.id, 5, None, "alice")
        assert isinstance(outcome, Failed)
        assert outcome.kind == "instance_lost"
        assert handle.id in outcome.failure.sentence
        assert (await b.cancel(handle.id, "alice")).was == "lost"
        space.alive.add("aaaaaa")


async def test_a_record_of_another_version_is_one_sentence() -> None:
    upstream, space = Upstream(), Space()
    async with instances(space, "aaaaaa", "bbbbbb") as (a, b):
        handle = await a.call(upstream.work(), 0, None)
        assert isinstance(handle, Job)
        space.records[handle.id]["v"] = 99
        with pytest.raises(ConfigError) as raised:
            await b.get_result(handle.id, 0, None, "alice")
        assert "another version (record version 99)" in raised.value.sentence
        listing = await b.listing("alice")
        assert [job["id"] for job in listing["jobs"]] == []  # left out, not a failure of the listing
        upstream.release.set()


async def test_a_board_that_is_down_is_one_sentence_and_work_goes_on_without_sharing() -> None:
    upstream, space = Upstream(), Space()
    async with instances(space, "aaaaaa", "bbbbbb") as (a, b):
        handle = await a.call(upstream.work(), 0, None)
        assert isinstance(handle, Job)
        space.down = True
        with pytest.raises(ConfigError) as raised:
            await b.get_result(handle.id, 0, None, "alice")
        assert "the shared state is down" in raised.value.sentence
        upstream.release.set()
        assert await b.call(upstream.work(request="other"), 30, None) == ANSWER  # done here, unshared
        assert upstream.runs == 2


async def test_a_refusal_of_one_clients_own_is_never_another_clients_outcome() -> None:
    """carol's budget is spent; alice's identical call on another instance follows carol's job, and
    must run its own work when that job is refused for carol's reasons."""
    space, release, runs = Space(), anyio.Event(), []
    refusal = Failed.of(client_budget_spent("Swarms", "carol", 50, 60))

    def work(client: str) -> Work:
        async def run(_progress: object, _job_id: str) -> Outcome:
            runs.append(client)
            if client == "carol":
                await release.wait()
                return refusal
            return ANSWER

        return Work("ask_swarm", ("swarms",), "Swarms", "same body", 30.0, client, run)

    async with instances(space, "aaaaaa", "bbbbbb") as (a, b):
        carols = await a.call(work("carol"), 0, None)
        assert isinstance(carols, Job)
        results: list[object] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _into(results, b.call(work("alice"), 30, None)))
            await anyio.wait_all_tasks_blocked()
            assert runs == ["carol"]  # alice follows carol's job, which holds the claim
            release.set()
        assert results == [ANSWER]
        assert runs == ["carol", "alice"]
        assert await a.get_result(carols.id, 5, None, "carol") == refusal
        record = Job.from_json((await a.snapshot(carols.id, "get_result", "carol")).to_json())
        assert isinstance(record.outcome, Failed)
        assert record.outcome.failure.personal  # the flag survives the board's record


@pytest.mark.parametrize(
    "outcome",
    [
        ANSWER,
        Answered(
            "fortytwo",
            Answer(text="a", finish_reason="length", choices=[ChoiceOut(index=0, text="a")], cached=True),
            Trace(latency_ms=1),
        ),
        Sides((ANSWER, SideFailed("fortytwo", Failure("Fortytwo: HTTP 401.", {"kind": "auth", "retryable": False})))),
        Failed(Failure("Swarms: HTTP 500.", {"kind": "upstream", "retryable": False})),
        Failed.every_side(
            (
                SideFailed("fortytwo", Failure("Fortytwo: down.", {"kind": "network", "retryable": True})),
                SideFailed("swarms", Failure("Swarms: down.", {"kind": "network", "retryable": False})),
            )
        ),
    ],
    ids=["answer", "answer with every field", "sides", "failed", "all failed"],
)
def test_every_outcome_survives_its_record(outcome: Outcome) -> None:
    record = Job("j_aaaaaa-000000000001", "alice", "ask_both", ("fortytwo", "swarms"), "F and S", 1.0, 30.0)
    record.outcome, record.finished, record.kept = outcome, 2.0, True
    back = Job.from_json(record.to_json())
    assert vars(back) == vars(record)  # every field, the outcome compared whole
