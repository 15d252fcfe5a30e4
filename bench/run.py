"""Benchmark our server against the floor (bench/floor.py), in one run, over real stdio.

    python -m bench.run [--quick] [--json results.json]

Starts the loopback fake upstream, then measures both servers side by side, interleaved
(ours, floor, ours, floor, …) so that machine noise falls on both. Every ratio is the median of
per-round ratios. Prints one table; `--json` also writes the figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client

from bench.harness import (
    KEY,
    QUICK,
    Counts,
    Row,
    Upstream,
    call_of,
    connected,
    current_rss_kib,
    floor_params,
    median_ratio,
    ours_params,
    rss_kib,
)


async def cold_start(upstream: Upstream, counts: Counts) -> Row:
    rounds = []
    for _ in range(counts.cold_rounds):
        figures = {}
        for side, params in (("ours", ours_params(upstream)), ("floor", floor_params(upstream))):
            started = time.perf_counter()
            async with Client(params) as client:
                await client.list_tools()
                figures[side] = (time.perf_counter() - started) * 1000
        rounds.append(figures)
    return Row(
        "cold start: spawn to tools/list (median ms)",
        statistics.median(r["ours"] for r in rounds),
        statistics.median(r["floor"] for r in rounds),
        median_ratio(rounds),
        "ms",
        "≤ 1.10×",
        rounds,
    )


async def per_call(upstream: Upstream, counts: Counts) -> list[Row]:
    """Ours (with its usage state file), ours with the file off, and the floor, interleaved."""
    rounds: list[dict[str, float]] = []
    samples: dict[str, list[float]] = {"ours": [], "ours_off": [], "floor": [], "direct": []}
    async with (
        connected(ours_params(upstream)) as (ours, _),
        connected(ours_params(upstream, SWARM_MCP_STATE_DB="off")) as (ours_off, _),
        connected(floor_params(upstream)) as (floor, _),
        httpx2.AsyncClient() as http,
    ):
        clients = {"ours": ours, "ours_off": ours_off, "floor": floor}
        url = upstream.base + "/chat/completions"
        headers = {"Authorization": f"Bearer {KEY}"}
        for side, client in clients.items():  # warm both: first calls open connections
            name, args = call_of(side)
            await client.call_tool(name, args("warm-up"))
        for round_no in range(counts.call_rounds):
            figures: dict[str, list[float]] = {"ours": [], "ours_off": [], "floor": [], "direct": []}
            for i in range(counts.calls_per_round):
                for side in ("ours", "ours_off", "floor", "direct"):
                    prompt = f"round {round_no} call {i}"
                    started = time.perf_counter()
                    if side == "direct":
                        body = {"model": "fortytwo-prime", "messages": [{"role": "user", "content": prompt}]}
                        (await http.post(url, json=body, headers=headers)).raise_for_status()
                    else:
                        name, args = call_of(side)
                        result = await clients[side].call_tool(name, args(prompt))
                        assert not result.is_error
                    figures[side].append((time.perf_counter() - started) * 1000)
            for side, values in figures.items():
                samples[side].extend(values)
            direct = statistics.median(figures["direct"])
            rounds.append(
                {
                    "ours": statistics.median(figures["ours"]) - direct,
                    "ours_off": statistics.median(figures["ours_off"]) - direct,
                    "floor": statistics.median(figures["floor"]) - direct,
                }
            )

    def p90(values: list[float]) -> float:
        return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]

    return [
        Row(
            "per-call overhead over a direct HTTP request (median ms)",
            statistics.median(r["ours"] for r in rounds),
            statistics.median(r["floor"] for r in rounds),
            median_ratio(rounds),
            "ms",
            "≤ 1.15×",
            rounds,
        ),
        Row(
            "  the same with the usage state file off (SWARM_MCP_STATE_DB=off)",
            statistics.median(r["ours_off"] for r in rounds),
            statistics.median(r["floor"] for r in rounds),
            statistics.median(r["ours_off"] / r["floor"] for r in rounds),
            "ms",
            "",
        ),
        Row(
            "  what the usage state file adds: with it vs without (ms)",
            statistics.median(r["ours"] for r in rounds),
            statistics.median(r["ours_off"] for r in rounds),
            statistics.median(r["ours"] / r["ours_off"] for r in rounds),
            "ms",
            "floor column: ours, file off",
        ),
        Row("tool call latency, median (ms)", statistics.median(samples["ours"]),
            statistics.median(samples["floor"]), None, "ms", ""),
        Row("tool call latency, p90 (ms)", p90(samples["ours"]), p90(samples["floor"]), None, "ms", ""),
        Row("direct HTTP request, median (ms)", statistics.median(samples["direct"]), None, None, "ms", ""),
    ]  # fmt: skip


async def concurrency(upstream: Upstream, counts: Counts) -> list[Row]:
    figures: dict[str, float] = {}
    errors: dict[str, float] = {}
    memory: dict[str, float | None] = {}
    raised = str(counts.concurrent)
    await upstream.configure(delay_s=counts.concurrent_delay_s)
    for side, params in (
        ("ours", ours_params(upstream, FORTYTWO_MAX_CONCURRENCY=raised)),
        ("floor", floor_params(upstream)),
    ):
        async with connected(params) as (client, pid):
            name, args = call_of(side)
            failures = 0

            async def one(i: int, client: Client = client, name: str = name, args: Any = args) -> None:
                nonlocal failures
                try:
                    result = await client.call_tool(name, args(f"concurrent question {i}"))
                    failures += int(result.is_error)
                except Exception:  # noqa: BLE001 - a benchmark counts failures, whatever they are
                    failures += 1

            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for i in range(counts.concurrent):
                    tg.start_soon(one, i)
            figures[side] = time.perf_counter() - started
            errors[side] = failures
            memory[side] = rss_kib(pid)
    await upstream.configure(delay_s=0.0)
    ours_mem, floor_mem = memory["ours"], memory["floor"]
    return [
        Row(
            f"{counts.concurrent} concurrent calls × {counts.concurrent_delay_s:g} s upstream: wall (s)",
            figures["ours"],
            figures["floor"],
            figures["ours"] / figures["floor"],
            "s",
            f"ours ≤ {1.5 * counts.concurrent_delay_s:g} s",
        ),
        Row("  errors among them", errors["ours"], errors["floor"], None, "", "0"),
        Row(
            "peak RSS after the concurrency run (MiB)",
            ours_mem / 1024 if ours_mem else None,
            floor_mem / 1024 if floor_mem else None,
            ours_mem / floor_mem if ours_mem and floor_mem else None,
            "MiB",
            "≤ 1.15×",
        ),
    ]


async def streaming(upstream: Upstream, counts: Counts) -> list[Row]:
    first_gap: list[float] = []
    notifications: list[float] = []
    streamed_ms: list[float] = []
    plain_ms: list[float] = []
    await upstream.configure(stream_tokens=counts.stream_tokens, long_answer=True)
    async with connected(ours_params(upstream)) as (client, _):
        for _ in range(counts.stream_rounds):
            updates: list[float] = []

            async def on_progress(
                progress: float, total: float | None, message: str | None, updates: list[float] = updates
            ) -> None:
                updates.append(time.monotonic())

            await upstream.configure(frame_delay_s=0.0005)  # paced: about 2 s for 2000 chunks
            result = await client.call_tool("ask_fortytwo", {"prompt": "stream"}, progress_callback=on_progress)
            assert not result.is_error
            first = (await upstream.first_frames())[-1]
            if updates:
                first_gap.append((updates[0] - first) * 1000)
            notifications.append(len(updates))

            await upstream.configure(frame_delay_s=0.0)  # unpaced: what streaming itself costs us
            started = time.perf_counter()
            streamed = await client.call_tool("ask_fortytwo", {"prompt": "stream"}, progress_callback=on_progress)
            streamed_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            plain = await client.call_tool("ask_fortytwo", {"prompt": "plain"})
            plain_ms.append((time.perf_counter() - started) * 1000)
            assert streamed.structured_content is not None
            assert plain.structured_content is not None
            assert streamed.structured_content["text"] == plain.structured_content["text"]
    await upstream.configure(long_answer=False)
    return [
        Row(f"streamed {counts.stream_tokens} tokens: first chunk → first progress (ms)",
            statistics.median(first_gap) if first_gap else None, None, None, "ms", "≤ 100 ms"),
        Row("  progress notifications per streamed answer", statistics.median(notifications), None, None, "",
            "a few per second"),
        Row("  streamed call vs plain call of the same answer, unpaced (ms)", statistics.median(streamed_ms),
            statistics.median(plain_ms), statistics.median(streamed_ms) / statistics.median(plain_ms), "ms",
            "floor column: our plain call"),
    ]  # fmt: skip


async def held_jobs(upstream: Upstream, counts: Counts) -> list[Row]:
    """Many jobs in flight at once on a slow upstream: memory per job, and how late heartbeats get."""
    heartbeat_s = 1.0
    env = {
        "FORTYTWO_MAX_CONCURRENCY": str(counts.held_jobs),
        "SWARM_MCP_HEARTBEAT": str(heartbeat_s),
        "SWARM_MCP_WAIT": str(counts.held_delay_s * 2),
    }
    beats: list[list[float]] = [[] for _ in range(counts.held_jobs)]
    async with connected(ours_params(upstream, **env)) as (client, pid):
        await client.call_tool("ask_fortytwo", {"prompt": "warm-up"})
        before = current_rss_kib(pid)
        sent = await upstream.requests()
        await upstream.configure(delay_s=counts.held_delay_s)

        async def one(i: int) -> None:
            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                beats[i].append(time.monotonic())

            await client.call_tool("ask_fortytwo", {"prompt": f"held job {i}"}, progress_callback=on_progress)

        async with anyio.create_task_group() as tg:
            for i in range(counts.held_jobs):
                tg.start_soon(one, i)
            while await upstream.requests() < sent + counts.held_jobs:  # noqa: ASYNC110 - another process's count
                await anyio.sleep(0.1)
            all_held = time.monotonic()
            held = current_rss_kib(pid)
            await anyio.sleep(counts.held_watch_s)
            tg.cancel_scope.cancel()
    await upstream.configure(delay_s=0.0)
    # Steady state: the gaps between one job's heartbeats once every job is in flight (not the start-up burst).
    lateness = [
        (later - earlier - heartbeat_s) * 1000
        for times in beats
        for earlier, later in itertools.pairwise(times)
        if earlier >= all_held
    ]
    return [
        Row(f"{counts.held_jobs} jobs held on a {counts.held_delay_s:g} s upstream: RSS per job (KiB)",
            (held - before) / counts.held_jobs, None, None, "KiB", ""),
        Row(f"  heartbeat lateness with {counts.held_jobs} jobs waiting, median (ms)",
            statistics.median(lateness) if lateness else None, None, None, "ms", f"heartbeat every {heartbeat_s:g} s"),
        Row("  heartbeat lateness, worst (ms)", max(lateness) if lateness else None, None, None, "ms", ""),
    ]  # fmt: skip


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value:.2f}"
    if unit in ("ms", "MiB", "KiB"):
        return f"{value:.1f}"
    return f"{value:g}"


def table(rows: list[Row]) -> str:
    lines = ["| measure | ours | floor | ratio | target |", "| --- | ---: | ---: | ---: | --- |"]
    for row in rows:
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "—"
        lines.append(
            f"| {row.name} | {fmt(row.ours, row.unit)} | {fmt(row.floor, row.unit)} | {ratio} | {row.target} |"
        )
    return "\n".join(lines)


async def main_async(counts: Counts) -> list[Row]:
    with tempfile.TemporaryDirectory() as workdir:
        upstream = Upstream(Path(workdir))
        try:
            rows = [await cold_start(upstream, counts)]
            rows += await per_call(upstream, counts)
            rows += await concurrency(upstream, counts)
            rows += await streaming(upstream, counts)
            rows += await held_jobs(upstream, counts)
            from bench.shared import redis_rows  # noqa: PLC0415 - only with --redis

            rows += await redis_rows(upstream, counts, Path(workdir))
        finally:
            upstream.close()
    return rows


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )  # fmt: skip
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny counts, to check that the benchmark still runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else Counts()
    rows = anyio.run(main_async, counts)
    print(f"Machine: {machine()}\n")
    print(table(rows))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine(), "rows": [r.__dict__ for r in rows]}, indent=2, default=str) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
