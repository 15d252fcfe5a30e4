"""What the usage state file costs a call, measured closer than `bench.run` can: one server with the
file and one without, called alternately, many calls a round.

    python -m bench.state_file [--rounds 7] [--calls 100]

Prints each round's median latency of both and their difference, then the median difference.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from bench.harness import Upstream, call_of, connected, ours_params


async def measure(rounds: int, calls: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        upstream = Upstream(Path(workdir))
        try:
            async with (
                connected(ours_params(upstream)) as (with_file, _),
                connected(ours_params(upstream, SWARM_MCP_STATE_DB="off")) as (without, _),
            ):
                name, args = call_of("ours")
                sides = {"with the file": with_file, "without": without}
                for client in sides.values():
                    for i in range(20):
                        await client.call_tool(name, args(f"warm-up {i}"))
                differences = []
                for round_no in range(rounds):
                    times: dict[str, list[float]] = {side: [] for side in sides}
                    for i in range(calls):
                        for side, client in sides.items():
                            started = time.perf_counter()
                            result = await client.call_tool(name, args(f"{round_no} {i} {side}"))
                            assert not result.is_error
                            times[side].append((time.perf_counter() - started) * 1e6)
                    with_us, without_us = (statistics.median(values) for values in times.values())
                    differences.append(with_us - without_us)
                    print(f"round {round_no + 1}: with the file {with_us:.0f} µs, without {without_us:.0f} µs, "
                          f"difference {with_us - without_us:+.0f} µs")  # fmt: skip
                print(f"median difference: {statistics.median(differences):+.0f} µs a call")
        finally:
            upstream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    anyio.run(measure, args.rounds, args.calls)


if __name__ == "__main__":
    main()
