"""The command line catches a newcomer's mistakes, each in one sentence (issue rows, one test each)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.servers import SCRIPT, run_script

ROOT = Path(__file__).parent.parent


def test_a_mistyped_flag_names_the_closest_flag() -> None:
    done = run_script("--wiat", "5", env={})
    assert done.returncode == 2
    assert "unknown flag --wiat (did you mean --wait?)" in done.stderr
    assert done.stdout == ""


def test_a_misspelt_variable_is_named_with_the_closest_setting(tmp_path: Path) -> None:
    env = {"SWARM_MCP_WIAT": "5", "FORTYTWO_API_KEYS": "ft-key", "SWARM_MCP_STATE_DB": str(tmp_path / "s.db")}
    done = run_script("check", env=env)
    assert "SWARM_MCP_WIAT is not a setting, so it does nothing; did you mean SWARM_MCP_WAIT?" in done.stderr
    assert "FORTYTWO_API_KEYS is not a setting, so it does nothing; did you mean FORTYTWO_API_KEY?" in done.stderr
    assert "SWARM_MCP_WAIT = 45.0" in done.stdout  # ignored, not taken for the setting it resembles


def test_a_terminal_on_stdin_is_told_the_server_waits_for_a_client() -> None:
    """Started by hand in a terminal, the server says on stderr what it waits for and how to try a call."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [SCRIPT],
        stdin=follower,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", ""), "SWARM_MCP_STATE_DB": "off"},
    )
    os.close(follower)
    stderr = process.stderr
    assert stderr is not None
    try:
        said = b""
        deadline = time.monotonic() + 30
        while b"inspector" not in said and time.monotonic() < deadline:
            ready, _, _ = select.select([stderr], [], [], 1)
            if ready:
                said += os.read(stderr.fileno(), 4096)
    finally:
        process.terminate()
        process.wait(timeout=10)
        stderr.close()
        os.close(leader)
    assert b"waiting for an MCP client on stdin" in said
    assert b"npx @modelcontextprotocol/inspector --cli" in said


def test_building_the_bundle_without_node_is_one_sentence(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bundle" / "build.py"), "--out", str(tmp_path), "--mcpb", "no-such-npx-here"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "install Node.js 18 or newer (it brings npx)" in done.stderr
    assert "Traceback" not in done.stderr
