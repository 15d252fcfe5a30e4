"""What every benchmark script shares: the fake upstream in a process of its own, the two servers'
launch parameters, a connected client, and the figures (rounds, rows, RSS, ratios).

`bench.run` is the script that prints the main table; the others (`bench.shared`, `bench.state_file`,
`bench.instructions`) build on this module, never on each other.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"


class Upstream:
    """The fake upstream (bench/upstream.py), in a process of its own."""

    def __init__(self, workdir: Path) -> None:
        port_file = workdir / "upstream.port"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.upstream", str(port_file)], cwd=ROOT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.05)
        self.root = f"http://127.0.0.1:{port_file.read_text()}"
        self.base = self.root + "/v1"
        self.state_db = workdir / "usage.sqlite3"
        """Our server's usage state file: in the benchmark's own directory, never the user's."""

    async def configure(self, **settings: Any) -> None:
        async with httpx2.AsyncClient() as http:
            (await http.post(self.root + "/_config", json=settings)).raise_for_status()

    async def requests(self) -> int:
        async with httpx2.AsyncClient() as http:
            count: int = (await http.get(self.root + "/_stats")).json()["requests"]
            return count

    async def first_frames(self) -> list[float]:
        async with httpx2.AsyncClient() as http:
            frames: list[float] = (await http.get(self.root + "/_stats")).json()["first_frames"]
            return frames

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@dataclass
class Counts:
    cold_rounds: int = 7
    call_rounds: int = 5
    calls_per_round: int = 60
    concurrent: int = 200
    concurrent_delay_s: float = 1.0
    stream_tokens: int = 2000
    stream_rounds: int = 5
    held_jobs: int = 1000
    held_delay_s: float = 30.0
    held_watch_s: float = 6.0


QUICK = Counts(
    cold_rounds=2, call_rounds=2, calls_per_round=5, concurrent=10, concurrent_delay_s=0.2, stream_tokens=50,
    stream_rounds=1, held_jobs=20, held_delay_s=4.0, held_watch_s=2.5,
)  # fmt: skip


@dataclass
class Row:
    name: str
    ours: float | None
    floor: float | None
    ratio: float | None
    unit: str
    target: str
    rounds: list[dict[str, float]] = field(default_factory=list)


def ours_params(upstream: Upstream, **env: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "swarm_inference_mcp.server"],
        cwd=str(ROOT),
        env={
            "PATH": os.environ.get("PATH", ""),
            "NO_PROXY": "127.0.0.1",
            "FORTYTWO_API_KEY": KEY,
            "FORTYTWO_BASE_URL": upstream.base,
            "SWARMS_API_KEY": KEY,
            "SWARMS_BASE_URL": upstream.base,
            "SWARM_MCP_LOG_LEVEL": "WARNING",
            "SWARM_MCP_STATE_DB": str(upstream.state_db),
            **env,
        },
    )


def floor_params(upstream: Upstream) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=[str(ROOT / "bench" / "floor.py")],
        cwd=str(ROOT),
        env={
            "PATH": os.environ.get("PATH", ""),
            "NO_PROXY": "127.0.0.1",
            "FLOOR_BASE_URL": upstream.base,
            "FLOOR_API_KEY": KEY,
        },
    )


def call_of(side: str) -> tuple[str, Callable[[str], dict[str, Any]]]:
    if side.startswith("ours"):
        return "ask_fortytwo", lambda prompt: {"prompt": prompt}
    return "ask", lambda prompt: {"prompt": prompt}


def children_rss_peak_kib() -> dict[int, int]:
    """Peak RSS (VmHWM) of each child process of this one, from /proc."""
    peaks: dict[int, int] = {}
    me = os.getpid()
    for task in Path(f"/proc/{me}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks[int(pid)] = int(line.split()[1])
    return peaks


@asynccontextmanager
async def connected(params: StdioServerParameters) -> AsyncIterator[tuple[Client, int | None]]:
    before = set(children_rss_peak_kib())
    async with Client(params) as client:
        new = set(children_rss_peak_kib()) - before
        yield client, (new.pop() if len(new) == 1 else None)


def current_rss_kib(pid: int | None) -> float:
    """Resident memory now (VmRSS) of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def rss_kib(pid: int | None) -> float | None:
    if pid is None:
        return None
    return float(children_rss_peak_kib().get(pid, 0)) or None


def median_ratio(rounds: list[dict[str, float]], key: str = "") -> float:
    return statistics.median(r["ours" + key] / r["floor" + key] for r in rounds)
