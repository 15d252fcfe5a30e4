"""Fair shares of a provider's places: one client's long queue delays another's request by about one
place's turnover, not by the whole queue."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from mcp import Client

from swarm_inference_mcp.tools.connection import FairLimiter
from tests.conftest import error_of
from tests.fake_upstream import FakeUpstream, Reply, eventually
from tests.servers import http_server, mcp_client
from tests.test_jobs import answer_of, handle_of

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ALICE, BOB = "alice-token-0123456789abcdef", "bob-token-0123456789abcdef01"


async def test_a_freed_place_goes_to_the_client_that_waited_longest_without_one() -> None:
    limiter, served = FairLimiter(1), []

    async def one(client: str, n: int) -> None:
        await limiter.acquire(client)
        served.append(f"{client}{n}")
        await anyio.lowlevel.checkpoint()
        limiter.release()

    await limiter.acquire("holder")
    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(one, "alice", n)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(one, "bob", 0)
        await anyio.wait_all_tasks_blocked()
        limiter.release()
    assert served == ["alice0", "bob0", "alice1", "alice2", "alice3", "alice4"]
    assert limiter.free == 1


async def test_a_place_handed_to_a_cancelled_waiter_passes_on() -> None:
    limiter = FairLimiter(1)
    await limiter.acquire(None)  # the one place is held
    a = asyncio.get_running_loop().create_task(limiter.acquire("a"))
    b = asyncio.get_running_loop().create_task(limiter.acquire("b"))
    await anyio.wait_all_tasks_blocked()
    limiter.release()  # hands the place to a ...
    a.cancel()  # ... which is cancelled before it runs again: the place must reach b
    with anyio.fail_after(5):
        await b
    assert a.cancelled()
    limiter.release()
    assert limiter.free == 1


async def test_bobs_calls_wait_about_one_turnover_while_alice_holds_3000_jobs(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """alice queues 3,000 jobs on Fortytwo (four places, half a second each: over six minutes of work);
    bob's 20 calls meanwhile each wait for one place to free, not for alice's queue."""
    tokens = tmp_path / "clients.txt"
    tokens.write_text(f"alice {ALICE} max_jobs=3000\nbob {BOB}\n")
    turnover = 0.5
    fake.script("fortytwo", *(Reply(delay_s=turnover) for _ in range(3200)))
    env = {"SWARM_MCP_TOKENS_FILE": str(tokens), "FORTYTWO_MAX_CONCURRENCY": "4", "SWARM_MCP_MAX_JOBS": "10000"}
    with http_server(fake, tmp_path, "--stateless", **env) as (base, _):
        async with mcp_client(f"{base}/mcp", token=ALICE) as alice, mcp_client(f"{base}/mcp", token=BOB) as bob:
            async with anyio.create_task_group() as tg:
                for part in range(10):
                    tg.start_soon(_queue_jobs, alice, part * 300, 300)
            waits = []
            for n in range(20):
                started = time.monotonic()
                answer_of(await bob.call_tool("ask_fortytwo", {"prompt": f"bob {n}", "wait_s": 60}))
                waits.append(time.monotonic() - started)
    # at most one turnover for a place to free, one for bob's own request, and the HTTP round trips
    assert max(waits) < 2 * turnover + 0.7, waits
    assert statistics.median(waits) < 2 * turnover + 0.3, waits


async def _queue_jobs(client: Client, first: int, count: int) -> None:
    for n in range(first, first + count):
        handle_of(await client.call_tool("ask_fortytwo", {"prompt": f"alice {n}", "wait_s": 0}))


async def test_a_client_past_its_job_limit_is_refused_and_nothing_is_queued_or_sent(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    tokens = tmp_path / "clients.txt"
    tokens.write_text(f"alice {ALICE} max_jobs=3\nbob {BOB}\n")
    fake.script("fortytwo", *(Reply(delay_s=3) for _ in range(10)))
    env = {"SWARM_MCP_TOKENS_FILE": str(tokens), "SWARM_MCP_MAX_JOBS_PER_CLIENT": "2", "FORTYTWO_MAX_CONCURRENCY": "10"}
    with http_server(fake, tmp_path, "--stateless", **env) as (base, _):
        async with mcp_client(f"{base}/mcp", token=ALICE) as alice, mcp_client(f"{base}/mcp", token=BOB) as bob:
            for n in range(3):
                handle_of(await alice.call_tool("ask_fortytwo", {"prompt": f"alice {n}", "wait_s": 0}))
            refused = await alice.call_tool("ask_fortytwo", {"prompt": "alice 3", "wait_s": 0})
            handle_of(await alice.call_tool("ask_fortytwo", {"prompt": "alice 0", "wait_s": 0}))  # joins, not new
            for n in range(2):
                handle_of(await bob.call_tool("ask_fortytwo", {"prompt": f"bob {n}", "wait_s": 0}))
            bobs_third = await bob.call_tool("ask_fortytwo", {"prompt": "bob 2", "wait_s": 0})
            await eventually(lambda: len(fake.seen("fortytwo")) == 5)
    error = error_of(refused)
    assert error["kind"] == "rate_limited"
    assert error["retryable"] is True
    assert error["retry_after_s"] == 30
    assert "client alice already has 3 jobs running, its limit; nothing was queued or sent" in error["message"]
    assert "client bob already has 2 jobs running" in error_of(bobs_third)["message"]
    sent = sorted(request.body["messages"][-1]["content"] for request in fake.seen("fortytwo"))
    assert sent == ["alice 0", "alice 1", "alice 2", "bob 0", "bob 1"]
