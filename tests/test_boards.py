"""One contract, both shared job boards: `tests/memory_board.py` (what the unit tests of the shared path
run on) and `RedisBoard` on a real Redis. Two boards are two instances; each case holds for both, so
the in-memory one cannot drift from what Redis does."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from swarm_inference_mcp.server.jobs.board import JobBoard
from swarm_inference_mcp.server.jobs.outcome import Answered, Outcome, Trace
from swarm_inference_mcp.server.jobs.table import Work
from swarm_inference_mcp.tools.models import Answer
from tests.memory_board import MemoryBoard, Space

pytestmark = pytest.mark.anyio

BOARDS = ["memory", pytest.param("redis", marks=pytest.mark.slow)]


async def _never(_progress: object, _job_id: str) -> Outcome:
    raise AssertionError("a board never runs work")


def work(request: str = "the same body", client: str | None = "alice") -> Work:
    return Work("ask_swarm", ("swarms",), "Swarms", request, 60.0, client, _never)


def job_id(instance: str) -> str:
    return f"j_{instance}-{secrets.token_hex(12)}"


ANSWER = Answered("swarms", Answer(text="yes"), Trace(latency_ms=5))


@dataclass
class Pair:
    """Two instances sharing one board, both serving, and the cancels instance A was asked for."""

    a: JobBoard
    b: JobBoard
    a_id: str
    b_id: str
    cancelled: list[str]


@pytest.fixture(params=BOARDS)
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    a, b = secrets.token_hex(3), secrets.token_hex(3)
    cancelled: list[str] = []
    async with AsyncExitStack() as stack:
        boards: tuple[Any, Any]
        if request.param == "memory":
            space = Space()
            boards = MemoryBoard(space, a), MemoryBoard(space, b)
        else:
            from swarm_inference_mcp.server.scaleout.board import RedisBoard  # noqa: PLC0415 - only with Redis
            from swarm_inference_mcp.server.scaleout.link import RedisLink  # noqa: PLC0415

            server = request.getfixturevalue("redis_server")
            server.flush()
            links = [await RedisLink.open(server.url) for _ in range(2)]
            for link in links:
                stack.push_async_callback(link.aclose)
            boards = RedisBoard(links[0], a, lease_s=2.0), RedisBoard(links[1], b, lease_s=2.0)
        await stack.enter_async_context(boards[0].serving(cancelled.append))
        await stack.enter_async_context(boards[1].serving(lambda _: None))
        yield Pair(boards[0], boards[1], a, b, cancelled)


async def test_identical_work_is_claimed_once_until_it_is_finished(pair: Pair) -> None:
    a, b = pair.a, pair.b
    first, second, third = job_id(pair.a_id), job_id(pair.b_id), job_id(pair.b_id)
    started = time.time()
    assert await a.claim(first, work(), started) is None  # A does it
    assert await b.claim(second, work(), started) == first  # B waits on A's job
    assert await b.claim(job_id(pair.b_id), work("another body"), started) is None
    await a.finish(first, work(), started, ANSWER, 60.0, kept=True)
    assert await b.claim(third, work(), started) is None  # released: the next one does it


async def test_a_finished_job_is_found_by_the_other_instance_and_listed_for_its_client_only(
    pair: Pair,
) -> None:
    a, b = pair.a, pair.b
    done, started = job_id(pair.a_id), time.time()
    await a.claim(done, work(), started)
    await a.finish(done, work(), started, ANSWER, 60.0, kept=True)
    record = await b.find(done)
    assert record is not None
    assert record.outcome == ANSWER
    assert record.client == "alice"
    assert [job.id for job in await b.jobs_of("alice")] == [done]
    assert await b.jobs_of("bob") == []


async def test_waiting_on_another_instances_job_ends_when_it_finishes(
    pair: Pair,
) -> None:
    a, b = pair.a, pair.b
    running, started = job_id(pair.a_id), time.time()
    await a.claim(running, work(), started)
    waited: list[Any] = []

    async def wait() -> None:
        waited.append(await b.wait(running, 10.0, None, 60.0))

    with anyio.fail_after(8):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await a.finish(running, work(), started, ANSWER, 60.0, kept=True)
    (record,) = waited
    assert record is not None
    assert record.outcome == ANSWER


async def test_a_cancel_asked_on_one_instance_reaches_the_one_running_the_job(
    pair: Pair,
) -> None:
    running = job_id(pair.a_id)
    await pair.a.claim(running, work(), time.time())
    await pair.b.cancel(running)
    with anyio.fail_after(5):
        while pair.cancelled != [running]:  # noqa: ASYNC110 - delivered by the board's own listener
            await anyio.sleep(0.01)


@pytest.mark.slow
async def test_a_redis_listing_reads_the_same_few_bytes_whatever_the_answers_hold(redis_server: Any) -> None:
    """Two finished jobs of alice's, answers of 5 bytes and of 5 MB: her listing reads two records of
    the same small size (no answer text in them), and collecting either reads its whole answer."""
    from swarm_inference_mcp.server.scaleout.board import RedisBoard  # noqa: PLC0415 - only with Redis
    from swarm_inference_mcp.server.scaleout.link import RedisLink  # noqa: PLC0415

    redis_server.flush()
    instance = secrets.token_hex(3)
    link = await RedisLink.open(redis_server.url)
    try:
        board = RedisBoard(link, instance, lease_s=2.0)
        async with board.serving(lambda _: None):
            ids, started = [job_id(instance), job_id(instance)], time.time()
            answers = [
                Answered("swarms", Answer(text=text), Trace(latency_ms=5)) for text in ("short", "x" * 5_000_000)
            ]
            for n, (one, answer) in enumerate(zip(ids, answers, strict=True)):
                await board.claim(one, work(f"body {n}"), started)
                await board.finish(one, work(f"body {n}"), started, answer, 60.0, kept=True)
            listed = await board.jobs_of("alice")
            found = [await board.find(one) for one in ids]
    finally:
        await link.aclose()
    with redis_server.client() as client:
        sizes = [client.strlen(f"swarm-mcp:job:{one}") for one in ids]
    assert max(sizes) < 2_000
    assert abs(sizes[0] - sizes[1]) < 50  # the same but for a timestamp's digits
    assert sorted(job.id for job in listed) == sorted(ids)
    assert [None if job is None else job.outcome for job in found] == answers
