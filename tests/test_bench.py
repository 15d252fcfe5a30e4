"""The benchmark still runs (tiny counts, no timing asserted): it must not rot between releases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from bench.instructions import WARM_UP

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent


def test_benchmark_runs_and_prints_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    for row in (
        "cold start",
        "per-call overhead",
        "usage state file off",
        "concurrent calls",
        "peak RSS",
        "first chunk → first progress",
        "jobs held",
        "heartbeat lateness",
        "sharing Redis vs alone",
        "over two HTTP instances sharing Redis",
    ):
        assert row in done.stdout
    figures = json.loads(out.read_text())
    assert figures["machine"]
    assert all(row["name"] for row in figures["rows"])
    errors = next(r for r in figures["rows"] if "errors" in r["name"])
    assert errors["ours"] == 0


def test_the_instruction_count_runs_its_calls_on_both_sides(tmp_path: Path) -> None:
    """What valgrind counts in `bench.instructions` (valgrind itself is the developer's: without it
    the script says so). Each side's counted process makes its calls, all answered."""
    from bench.harness import Upstream  # noqa: PLC0415 - its fake upstream, in a process of its own

    upstream = Upstream(tmp_path)
    try:
        for side in ("ours", "floor"):
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.instructions",
                    "--child",
                    side,
                    "2",
                    upstream.base,
                    str(upstream.state_db),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
        requests = anyio.run(upstream.requests)
    finally:
        upstream.close()
    assert requests == 2 * (WARM_UP + 2)
