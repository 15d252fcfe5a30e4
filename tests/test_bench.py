"""The benchmark still runs (tiny counts, no timing asserted): it must not rot between releases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
