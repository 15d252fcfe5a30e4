"""What polling a task costs the server, against polling a job handle with get_result.

    python -m bench.tasks [--polls N] [--tasks N] [--seconds S] [--no-instructions]

Drives the console script over stdio with raw JSON-RPC (the 2025-11-25 generation, as VS Code
polls), against the fake upstream of `bench.harness` answering only after ten minutes, so every
job stays running:

1. One running task, polled N times with `tasks/get`, then N times with a `get_result` tool call
   (`wait_s: 0`) on the same job: the median round trip of each, and, unless `--no-instructions`,
   the server's instructions per poll under valgrind's callgrind (two runs of each kind that differ
   only in their number of polls, so start-up cancels out; the garbage collector off).
2. `--tasks` running tasks, every one polled once a second for `--seconds`: the server's CPU share
   over that time and its RSS per task.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from bench.harness import KEY, ROOT, Upstream, current_rss_kib

SERVE = "import gc, sys; gc.disable(); from server.cli import main; sys.exit(main())"
"""The console script with the garbage collector off, so that one collection does not move a count."""


class Wire:
    """A raw JSON-RPC client of one server process over its stdin and stdout."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self._send = process.stdin
        self._receive = process.stdout
        self._buffer = b""
        self._next = 0

    async def send(self, method: str, params: dict[str, Any]) -> int:
        self._next += 1
        message = {"jsonrpc": "2.0", "id": self._next, "method": method, "params": params}
        await self._send.send(json.dumps(message).encode() + b"\n")
        return self._next

    async def receive(self) -> dict[str, Any]:
        """The next response (notifications are skipped)."""
        while True:
            while b"\n" not in self._buffer:
                self._buffer += await self._receive.receive()
            line, self._buffer = self._buffer.split(b"\n", 1)
            message: dict[str, Any] = json.loads(line)
            if "id" in message:
                return message

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        await self.send(method, params)
        reply = await self.receive()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result


@asynccontextmanager
async def served(upstream: Upstream, workdir: Path, valgrind: str | None = None) -> AsyncIterator[Wire]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "FORTYTWO_API_KEY": KEY,
        "FORTYTWO_BASE_URL": upstream.base,
        "SWARMS_API_KEY": KEY,
        "SWARMS_BASE_URL": upstream.base,
        "FORTYTWO_MAX_CONCURRENCY": "1000",
        "SWARM_MCP_MAX_JOBS": "100000",
        "SWARM_MCP_STATE_DB": str(workdir / "usage.sqlite3"),
        "SWARM_MCP_LOG_LEVEL": "WARNING",
        "NO_PROXY": "127.0.0.1",
    }
    command = [sys.executable, "-c", SERVE]
    if valgrind is not None:
        command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *command]
    log = (workdir / "server.stderr").open("wb")
    async with await anyio.open_process(command, env=env, cwd=ROOT, stderr=log) as process:
        wire = Wire(process)
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
        await wire.request("initialize", init)
        await process.stdin.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')  # type: ignore[union-attr]
        try:
            yield wire
        finally:
            await process.stdin.aclose()  # type: ignore[union-attr]
            with anyio.fail_after(600):
                await process.wait()
    log.close()


async def new_task(wire: Wire, prompt: str) -> str:
    params = {"name": "ask_fortytwo", "arguments": {"prompt": prompt}, "task": {"ttl": 600_000}}
    task_id: str = (await wire.request("tools/call", params))["task"]["taskId"]
    return task_id


def poll_params(kind: str, task_id: str) -> tuple[str, dict[str, Any]]:
    if kind == "tasks/get":
        return "tasks/get", {"taskId": task_id}
    return "tools/call", {"name": "get_result", "arguments": {"job_id": task_id, "wait_s": 0}}


async def poll_times(upstream: Upstream, workdir: Path, polls: int) -> dict[str, float]:
    """Median round trip (ms) of each kind of poll, on one running task."""
    medians = {}
    async with served(upstream, workdir) as wire:
        task_id = await new_task(wire, "held")
        for kind in ("tasks/get", "get_result", "tasks/get", "get_result"):  # each twice: warm, then measured
            method, params = poll_params(kind, task_id)
            times = []
            for _ in range(polls):
                started = time.perf_counter()
                await wire.request(method, params)
                times.append((time.perf_counter() - started) * 1000)
            medians[kind] = statistics.median(times)
    return medians


async def poll_instructions(upstream: Upstream, workdir: Path, valgrind: str, polls: int) -> dict[str, float]:
    """Instructions per poll of each kind: two counted runs that differ only in `polls` polls."""
    per_poll = {}
    for kind in ("tasks/get", "get_result"):
        counts = []
        for extra in (0, polls):
            async with served(upstream, workdir, valgrind) as wire:
                task_id = await new_task(wire, f"held {kind} {extra}")
                method, params = poll_params(kind, task_id)
                for _ in range(20 + extra):
                    await wire.request(method, params)
            found = re.search(r"Collected : (\d+)", (workdir / "server.stderr").read_text())
            if found is None:
                raise SystemExit(f"callgrind printed no count:\n{(workdir / 'server.stderr').read_text()[-2000:]}")
            counts.append(int(found.group(1)))
        per_poll[kind] = (counts[1] - counts[0]) / polls
    return per_poll


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def many_tasks(upstream: Upstream, workdir: Path, tasks: int, seconds: float) -> dict[str, float]:
    """`tasks` running tasks, each polled once a second: the server's CPU share and RSS per task."""
    async with served(upstream, workdir) as wire:
        pid = wire.process.pid
        before = current_rss_kib(pid)
        ids = [await new_task(wire, f"task {n}") for n in range(tasks)]
        with anyio.fail_after(120):
            while await upstream.requests() < tasks:  # noqa: ASYNC110 - a count in another process
                await anyio.sleep(0.1)
        rss_per_task = (current_rss_kib(pid) - before) / tasks
        cpu_before, started = cpu_seconds(pid), time.monotonic()
        late = []
        for second in range(int(seconds)):
            tick = started + second
            await anyio.sleep(max(0.0, tick - time.monotonic()))
            for task_id in ids:
                await wire.send("tasks/get", {"taskId": task_id})
            for _ in ids:
                reply = await wire.receive()
                if reply.get("result", {}).get("status") != "working":
                    raise SystemExit(f"a task was not working: {reply}")
            late.append(time.monotonic() - tick)
        elapsed = time.monotonic() - started
        share = (cpu_seconds(pid) - cpu_before) / elapsed
    return {"cpu_share": share, "rss_per_task_kib": rss_per_task, "round_s": statistics.median(late)}


async def main_async(args: argparse.Namespace) -> None:
    valgrind = None if args.no_instructions else shutil.which("valgrind")
    if not args.no_instructions and valgrind is None:
        raise SystemExit("valgrind is needed for the instruction counts (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as workdir:
        upstream = Upstream(Path(workdir))
        try:
            await upstream.configure(delay_s=600.0)
            times = await poll_times(upstream, Path(workdir), args.polls)
            counts = await poll_instructions(upstream, Path(workdir), valgrind, args.polls) if valgrind else None
            load = await many_tasks(upstream, Path(workdir), args.tasks, args.seconds)
        finally:
            upstream.close()
    print(f"one running task, polled {args.polls} times each way (stdio, 2025-11-25)")
    print(f"  tasks/get             median {times['tasks/get']:.2f} ms", end="")
    print(f"   {counts['tasks/get'] / 1000:,.0f} k instructions" if counts else "")
    print(f"  get_result tool call  median {times['get_result']:.2f} ms", end="")
    print(f"   {counts['get_result'] / 1000:,.0f} k instructions" if counts else "")
    print(f"  tasks/get / get_result  {times['tasks/get'] / times['get_result']:.2f}x time", end="")
    print(f", {counts['tasks/get'] / counts['get_result']:.2f}x instructions" if counts else "")
    print(f"{args.tasks} running tasks, each polled once a second for {args.seconds:g} s")
    print(f"  server CPU share       {load['cpu_share'] * 100:.1f} % of one core")
    print(f"  RSS per running task   {load['rss_per_task_kib']:.1f} KiB")
    print(f"  one round of polls     {load['round_s'] * 1000:.0f} ms (median)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--polls", type=int, default=200, help="polls of each kind on one task (default 200)")
    parser.add_argument("--tasks", type=int, default=1000, help="running tasks polled once a second (default 1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long they are polled (default 20)")
    parser.add_argument("--no-instructions", action="store_true", help="skip the callgrind counts")
    anyio.run(main_async, parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
