"""Instructions per tool call, ours and the floor's, counted by valgrind's callgrind.

    python -m bench.instructions [--calls N]

A figure the machine's noise cannot move: on a shared two-core machine the timed ratios of
`bench.run` scatter by several percent from one run to the next, while these counts repeat to
within about 1%. They measure work, not time (no waiting, no other process), so they show what a
change to the call's path costs before three timed runs can.

Each side runs in one process: the SDK's in-memory client and the server, as `Client(server)`
(the client's check of each result against the tool's output schema included). The fake upstream
runs in a process of its own and is not counted. A run of `WARM` calls and one of `WARM + N`, both
after the same start-up, differ by N calls' instructions. The garbage collector is off in both: a
collection that falls inside one run and not the other moved the figure by 4%.

Needs valgrind (Debian: `apt-get install valgrind`); a little over a minute a side.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
WARM = 20
"""Calls in the shorter run (after the warm-up both runs make), so that both end alike."""
WARM_UP = 30
"""Calls before either run counts: connections open, caches fill, the usage writer starts."""


async def _child(side: str, calls: int, base: str, state_db: str) -> None:
    """The process valgrind counts: WARM_UP + `calls` tool calls through the in-memory client."""
    from mcp import Client  # noqa: PLC0415 - imported under valgrind, with the rest

    from bench.harness import KEY  # noqa: PLC0415

    env = {
        "FORTYTWO_API_KEY": KEY, "FORTYTWO_BASE_URL": base, "SWARMS_API_KEY": KEY, "SWARMS_BASE_URL": base,
        "SWARM_MCP_STATE_DB": state_db, "SWARM_MCP_LOG_LEVEL": "WARNING", "FLOOR_BASE_URL": base, "FLOOR_API_KEY": KEY,
    }  # fmt: skip
    os.environ.update(env)
    mcp_server: Any
    if side == "ours":
        from swarm_inference_mcp.server.app import create_server  # noqa: PLC0415
        from swarm_inference_mcp.server.environment import load_settings  # noqa: PLC0415

        mcp_server, tool = create_server(load_settings(env)), "ask_fortytwo"
    else:
        from bench import floor  # noqa: PLC0415

        mcp_server, tool = floor.server, "ask"
    async with Client(mcp_server) as client:
        for i in range(WARM_UP + calls):
            result = await client.call_tool(tool, {"prompt": f"call {i}"})
            if result.is_error:
                raise SystemExit(f"{side}: the call failed: {result.content}")


def _count(valgrind: str, side: str, calls: int, base: str, state_db: str) -> int:
    done = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m", "bench.instructions",
         "--child", side, str(calls), base, state_db],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{side}: the counted run failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="calls whose instructions are counted (default 100)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        gc.disable()
        side, calls, base, state_db = args.child
        anyio.run(_child, side, int(calls), base, state_db)
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is needed (Debian: apt-get install valgrind)")
    from bench.harness import Upstream  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as workdir:
        upstream = Upstream(Path(workdir))
        try:
            per_call = {}
            for side in ("ours", "floor"):
                short = _count(valgrind, side, WARM, upstream.base, str(upstream.state_db))
                long = _count(valgrind, side, WARM + args.calls, upstream.base, str(upstream.state_db))
                per_call[side] = (long - short) / args.calls
        finally:
            upstream.close()
    print(f"instructions per tool call, in one process (callgrind; {args.calls} calls counted)")
    print(f"  ours   {per_call['ours'] / 1000:9,.0f} k   (with the usage state file)")
    print(f"  floor  {per_call['floor'] / 1000:9,.0f} k")
    print(f"  ours / floor  {per_call['ours'] / per_call['floor']:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
