"""One contract, every usage store: memory, the SQLite state file, and Redis (a real one on loopback).

A request is written twice (reserved as it leaves, settled when it ends); totals count a reservation
until it is settled, then what the provider reported; a shared row counts for its client only. The
budgets read these totals, so the three stores must agree on every case here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from swarm_inference_mcp.server.accounting.ledger import SENT, MemoryUsageStore, Totals, UsageRow, UsageStore
from swarm_inference_mcp.server.accounting.sqlite import SqliteUsageStore
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

STORES = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.slow)]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UsageStore]:
    if request.param == "memory":
        yield MemoryUsageStore()
    elif request.param == "sqlite":
        opened = SqliteUsageStore.open(tmp_path / "usage.sqlite3")
        yield opened
        await anyio.to_thread.run_sync(opened.close)
    else:
        from swarm_inference_mcp.server.scaleout.link import RedisLink  # noqa: PLC0415 - only with Redis
        from swarm_inference_mcp.server.scaleout.usage import RedisUsageStore  # noqa: PLC0415

        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        link = await RedisLink.open(server.url)
        yield RedisUsageStore(link)
        await link.aclose()


async def written(pending: Awaitable[None] | None) -> None:
    if pending is not None:
        await pending


def reservation(ref: str, client: str | None = "alice", reserved: int = 100, **changes: Any) -> UsageRow:
    row = UsageRow(
        at=time.time(), tool="ask_swarm", provider="swarms", model="m", outcome=SENT, status=None, attempts=None,
        prompt_tokens=None, completion_tokens=None, total_tokens=None, latency_ms=0, job_id=None, client=client,
        ref=ref, reserved_tokens=reserved,
    )  # fmt: skip
    return replace(row, **changes)


def settled(row: UsageRow, prompt: int, completion: int, outcome: str = "answer") -> UsageRow:
    return replace(
        row, outcome=outcome, prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


async def day_totals(store: UsageStore, row: UsageRow) -> tuple[Totals, Totals]:
    day, month = row.periods
    totals = await store.totals([day, month])
    assert totals[(day, "swarms")] == totals[(month, "swarms")]  # a day's writes are its month's too
    clients = await store.client_totals(day)
    return totals[(day, "swarms")], clients.get("alice", Totals())


async def test_a_reservation_counts_until_it_is_settled_then_the_usage_does(store: UsageStore) -> None:
    sent = reservation("r1", reserved=100)
    await written(store.record(sent))
    assert await day_totals(store, sent) == (Totals(1, 0, 0, 0, 100), Totals(1, 0, 0, 0, 100))
    await written(store.record(settled(sent, 30, 40), sent))
    assert await day_totals(store, sent) == (Totals(1, 0, 30, 40, 70), Totals(1, 0, 30, 40, 70))


async def test_a_failed_request_is_an_error_once_settled_and_never_while_in_flight(store: UsageStore) -> None:
    sent = reservation("r2", reserved=50)
    await written(store.record(sent))
    assert (await day_totals(store, sent))[0].errors == 0
    failed = replace(sent, outcome="timeout", status=None)
    await written(store.record(failed, sent))
    assert await day_totals(store, sent) == (Totals(1, 1, 0, 0, 0), Totals(1, 1, 0, 0, 0))


async def test_a_shared_row_counts_for_its_client_and_not_for_the_provider(store: UsageStore) -> None:
    bobs = settled(reservation("r3", client="bob"), 10, 20)
    alices = replace(settled(reservation("r4"), 10, 20), shared=True)
    await written(store.record(bobs))
    await written(store.record(alices))
    provider, alice = await day_totals(store, alices)
    assert provider == Totals(1, 0, 10, 20, 30)  # the upstream was paid once, for bob
    assert alice == Totals(1, 0, 10, 20, 30)  # alice's own usage counts the answer she got
    assert (await store.client_totals(alices.periods[0]))["bob"] == Totals(1, 0, 10, 20, 30)


async def test_many_requests_in_flight_at_once_add_up_exactly(store: UsageStore) -> None:
    rows = [reservation(f"many-{n}", reserved=10) for n in range(50)]
    async with anyio.create_task_group() as tg:
        for row in rows:
            tg.start_soon(written, store.record(row))
    assert (await day_totals(store, rows[0]))[0] == Totals(50, 0, 0, 0, 500)
    async with anyio.create_task_group() as tg:
        for n, row in enumerate(rows):
            tg.start_soon(written, store.record(settled(row, n, 1), row))
    assert (await day_totals(store, rows[0]))[0] == Totals(50, 0, sum(range(50)), 50, sum(range(50)) + 50)
